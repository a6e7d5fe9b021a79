/// The runs of one scenario, paired by round, and what they add up to.
struct ScenarioReport: Sendable {
    var scenario: Scenario
    /// Where the Swift runs' loop ran; nil for a broker-free scenario (any caller).
    var caller: Caller?
    var c: [RunResult] = []
    var swift: [RunResult] = []
    var problems: [String] = []

    /// A metric's median and range over the rounds.
    struct Summary: Sendable {
        var median: Double
        var min: Double
        var max: Double

        init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            let middle = sorted.count / 2
            median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
            min = sorted[0]
            max = sorted[sorted.count - 1]
        }
    }

    enum Metric: String, CaseIterable, Sendable {
        case throughput = "messages_per_second"
        case cpu = "cpu_ns_per_message"
        case p50 = "p50_ns"
        case p99 = "p99_ns"

        func value(_ run: RunResult) -> Double? {
            switch self {
            case .throughput: run.messagesPerSecond
            case .cpu: run.cpuNanosecondsPerMessage
            case .p50: run.p50.map { Double($0) }
            case .p99: run.p99.map { Double($0) }
            }
        }
    }

    func summary(_ implementation: Implementation, _ metric: Metric) -> Summary? {
        Summary((implementation == .c ? c : swift).compactMap(metric.value))
    }

    /// Swift/C of each round's pair of runs (same round, same broker state), then summarized.
    func ratio(_ metric: Metric) -> Summary? {
        Summary(
            zip(c, swift).compactMap { c, swift in
                guard let c = metric.value(c), let swift = metric.value(swift), c > 0 else { return nil }
                return swift / c
            })
    }

    /// The targets for this scenario as (metric, limit, whether higher is better), for every
    /// caller: throughput at least C's (within noise), and CPU per message against C's, where
    /// the Swift layer adds work on top of rabbitmq-c's (a thread hand-off per message
    /// consumed, a wake-up per round trip) or saves it (publishing batches its writes).
    var targets: [(Metric, Double, Bool)] {
        switch scenario.kind {
        // Over TLS, the same targets as over TCP.
        case .publish where scenario.size <= 16, .publishTLS where scenario.size <= 16:
            [(.throughput, 0.95, true), (.cpu, 0.50, false)]
        case .publish, .publishHeaders, .publishTLS: [(.throughput, 0.95, true), (.cpu, 1.10, false)]
        case .consume, .consumeTLS: [(.throughput, 0.95, true), (.cpu, 1.30, false)]
        case .confirmStream: [(.throughput, 0.90, true), (.cpu, 1.00, false)]
        case .confirmEach: [(.throughput, 0.95, true), (.cpu, 1.30, false)]
        case .rpc: [(.p50, 1.05, false), (.cpu, 1.30, false)]
        case .rpcPatterns: [(.p50, 1.05, false)]
        // Broker-free CPU work: wall time is CPU time, so throughput would say the same again.
        case .fieldTable: [(.cpu, 2.50, false)]
        case .envelope: []
        }
    }

    var targetVerdict: String {
        guard scenario.kind.hasCBaseline else { return "n/a: no C equivalent" }
        var misses: [String] = []
        for (metric, limit, higherIsBetter) in targets {
            guard let ratio = ratio(metric)?.median else { continue }
            let met = higherIsBetter ? ratio >= limit : ratio <= limit
            if !met { misses.append("\(metric.shortName) \(higherIsBetter ? "<" : ">") \(format(limit, digits: 2))") }
        }
        return misses.isEmpty ? "met" : "MISS: " + misses.joined(separator: ", ")
    }
}

extension ScenarioReport.Metric {
    var shortName: String {
        switch self {
        case .throughput: "msg/s"
        case .cpu: "CPU/msg"
        case .p50: "p50"
        case .p99: "p99"
        }
    }
}
