import CRabbitMQBaseline

/// The C baseline's scenarios and helpers, each run on a thread of its own.
struct CBaseline: Sendable {
    let endpoint: BenchEndpoint

    func publish(queue: String, size: Int, count: Int, headers: Bool, maxSeconds: Double) async throws -> RunResult {
        try await run { endpoint, result in
            crmq_bench_publish(endpoint, queue, size, UInt64(count), headers ? 1 : 0, maxSeconds, result)
        }
    }

    func confirmStream(queue: String, size: Int, count: Int, window: Int, maxSeconds: Double) async throws -> RunResult {
        try await run { endpoint, result in
            crmq_bench_publish_confirm_stream(endpoint, queue, size, UInt64(count), UInt32(window), maxSeconds, result)
        }
    }

    func confirmEach(queue: String, size: Int, count: Int, maxSeconds: Double) async throws -> RunResult {
        try await run(latency: true) { endpoint, result in
            crmq_bench_publish_confirm_each(endpoint, queue, size, UInt64(count), maxSeconds, result)
        }
    }

    func consume(queue: String, count: Int, prefetch: Int, ackEvery: Int, maxSeconds: Double) async throws -> RunResult {
        try await run { endpoint, result in
            crmq_bench_consume(endpoint, queue, UInt64(count), UInt16(prefetch), UInt32(ackEvery), maxSeconds, result)
        }
    }

    func rpc(serverQueue: String, size: Int, count: Int, maxSeconds: Double) async throws -> RunResult {
        try await run(latency: true) { endpoint, result in
            crmq_bench_rpc_client(endpoint, serverQueue, size, UInt64(count), maxSeconds, result)
        }
    }

    func fieldTable(count: Int) async throws -> RunResult {
        try await run { _, result in crmq_bench_field_table(UInt64(count), result) }
    }

    // MARK: Harness helpers

    func resetQueue(_ queue: String, maxLength: Int) async throws {
        try await helper { endpoint, error, size in
            crmq_bench_queue_reset(endpoint, queue, Int64(maxLength), error, size)
        }
    }

    func deleteQueue(_ queue: String) async throws {
        try await helper { endpoint, error, size in crmq_bench_queue_delete(endpoint, queue, error, size) }
    }

    func fill(_ queue: String, size: Int, count: Int) async throws {
        try await helper { endpoint, error, errorSize in
            crmq_bench_fill(endpoint, queue, size, UInt64(count), error, errorSize)
        }
    }

    func counts(_ queue: String) async throws -> (messages: UInt32, consumers: UInt32) {
        let endpoint = self.endpoint
        let outcome: Result<(UInt32, UInt32), BenchError> = await DedicatedThread.run {
            var messages: UInt32 = 0
            var consumers: UInt32 = 0
            var error = [CChar](repeating: 0, count: 256)
            let status = endpoint.withC { crmq_bench_queue_counts($0, queue, &messages, &consumers, &error, error.count) }
            if status != 0 { return .failure(BenchError(String(cBuffer: error))) }
            return .success((messages, consumers))
        }
        return try outcome.get()
    }

    /// Runs the echo server of the RPC scenario (in the `rpc-server` child process).
    func rpcServer(queue: String, maxSeconds: Double) async throws {
        try await helper { endpoint, error, size in crmq_bench_rpc_server(endpoint, queue, maxSeconds, error, size) }
    }

    // MARK: Plumbing

    private func run(
        latency: Bool = false,
        _ body: @escaping @Sendable (UnsafePointer<crmq_bench_endpoint>, UnsafeMutablePointer<crmq_bench_result>) -> Void
    ) async throws -> RunResult {
        let endpoint = self.endpoint
        let outcome: Result<RunResult, BenchError> = await DedicatedThread.run {
            var result = crmq_bench_result()
            endpoint.withC { body($0, &result) }
            if result.status != 0 {
                let message = withUnsafeBytes(of: result.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                return .failure(BenchError("C baseline: \(message) (status \(result.status))"))
            }
            return .success(
                RunResult(
                    messages: result.messages, start: result.start, end: result.end,
                    p50: latency ? result.p50_ns : nil, p99: latency ? result.p99_ns : nil, check: result.check))
        }
        return try outcome.get()
    }

    private func helper(
        _ body: @escaping @Sendable (UnsafePointer<crmq_bench_endpoint>, UnsafeMutablePointer<CChar>, Int) -> Int32
    ) async throws {
        let endpoint = self.endpoint
        let failure: BenchError? = await DedicatedThread.run {
            var error = [CChar](repeating: 0, count: 256)
            let status = endpoint.withC { endpoint in
                error.withUnsafeMutableBufferPointer { body(endpoint, $0.baseAddress!, $0.count) }
            }
            return status == 0 ? nil : BenchError("\(String(cBuffer: error)) (status \(status))")
        }
        if let failure { throw failure }
    }
}
