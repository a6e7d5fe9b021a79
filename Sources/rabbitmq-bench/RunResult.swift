import CRabbitMQBaseline

/// One measured run of one scenario by one implementation.
struct RunResult: Sendable {
    var messages: UInt64
    var start: crmq_bench_sample
    var end: crmq_bench_sample
    /// Latency percentiles in nanoseconds; nil where the scenario has no latency.
    var p50: UInt64?
    var p99: UInt64?
    /// Scenario-specific sanity value (queue depth, nacks, bytes, matched replies).
    var check: UInt64

    var wallNanoseconds: UInt64 { end.wall_ns &- start.wall_ns }
    /// User + system CPU time of the whole process (every thread) during the run.
    var cpuNanoseconds: UInt64 { userNanoseconds &+ systemNanoseconds }
    var userNanoseconds: UInt64 { end.user_ns &- start.user_ns }
    var systemNanoseconds: UInt64 { end.system_ns &- start.system_ns }

    var messagesPerSecond: Double {
        wallNanoseconds == 0 ? 0 : Double(messages) * 1e9 / Double(wallNanoseconds)
    }

    var cpuNanosecondsPerMessage: Double {
        messages == 0 ? 0 : Double(cpuNanoseconds) / Double(messages)
    }

    static func sample() -> crmq_bench_sample {
        var sample = crmq_bench_sample()
        crmq_bench_sample_now(&sample)
        return sample
    }

    /// Nearest-rank percentiles computed by the same C function for both implementations.
    static func percentiles(_ latencies: inout [UInt64]) -> (p50: UInt64, p99: UInt64) {
        latencies.withUnsafeMutableBufferPointer { buffer in
            let p50 = crmq_bench_percentile(buffer.baseAddress, buffer.count, 0.50)
            let p99 = crmq_bench_percentile(buffer.baseAddress, buffer.count, 0.99)
            return (p50, p99)
        }
    }
}
