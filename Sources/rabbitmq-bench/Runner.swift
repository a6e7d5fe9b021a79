import Glibc

/// Prepares the broker for a scenario and runs it with either implementation.
struct Runner: Sendable {
    let c: CBaseline
    let swift: SwiftScenarios
    /// The same on the TLS endpoint (RABBITMQ_TLS_URL), when one is configured.
    let tls: (c: CBaseline, swift: SwiftScenarios)?
    let maxSeconds: Double
    /// Queue names carry the process id, so concurrent benchmarks on one broker do not mix.
    let prefix = "rabbitmq-bench.\(getpid())"

    var rpcQueue: String { "\(prefix).rpc-server" }

    func queue(for scenario: Scenario) -> String { "\(prefix).\(scenario.kind.rawValue)" }

    /// Resets the scenario's queue; for `consume`, fills it with exactly `count` messages.
    func prepare(_ scenario: Scenario, count: Int) async throws {
        let queue = queue(for: scenario)
        // A TLS scenario's queue lives on the TLS endpoint's broker (with broker.sh, the same node).
        let c = try baseline(for: scenario)
        switch scenario.kind.workload {
        case .publish, .publishHeaders, .confirmStream, .confirmEach:
            try await c.resetQueue(queue, maxLength: Scenario.maxQueueLength)
        case .consume:
            try await c.resetQueue(queue, maxLength: 0)
            // In a child process: filling costs about as much as the run itself.
            let fill = try ChildProcess.spawn(
                ["fill", "--queue", queue, "--size", "\(scenario.size)", "--messages", "\(count)"]
                    + (scenario.kind.overTLS ? ["--tls"] : []))
            let status = try await fill.wait(seconds: maxSeconds)
            guard status == 0 else { throw BenchError("filling \(queue) failed (exit status \(status))") }
        case .rpc, .rpcPatterns:
            break  // the echo server's queue lives as long as the server
        case .fieldTable, .envelope:
            break  // broker-free
        case .publishTLS, .consumeTLS:
            preconditionFailure("a workload is never a TLS kind")
        }
    }

    /// Prepares the broker, then runs the scenario with `implementation`; the Swift side's
    /// loop runs isolated to `caller` (the C side runs on a thread of its own whatever the caller).
    func run(_ scenario: Scenario, _ implementation: Implementation, caller: Caller, count: Int) async throws -> RunResult {
        try await prepare(scenario, count: count)
        switch implementation {
        case .c: return try await runC(scenario, count: count)
        case .swift: return try await caller.run(scenario, count: count, runner: self)
        }
    }

    /// The endpoints of the scenario's transport.
    private func sides(_ scenario: Scenario) throws -> (c: CBaseline, swift: SwiftScenarios) {
        guard scenario.kind.overTLS else { return (c, swift) }
        guard let tls else { throw BenchError("\(scenario.kind.rawValue) needs RABBITMQ_TLS_URL") }
        return tls
    }

    private func runC(_ scenario: Scenario, count: Int) async throws -> RunResult {
        let queue = queue(for: scenario)
        let size = scenario.size
        let c = try sides(scenario).c
        switch scenario.kind.workload {
        case .publish, .publishHeaders:
            return try await c.publish(
                queue: queue, size: size, count: count, headers: scenario.kind == .publishHeaders, maxSeconds: maxSeconds)
        case .confirmStream:
            return try await c.confirmStream(
                queue: queue, size: size, count: count, window: Scenario.confirmWindow, maxSeconds: maxSeconds)
        case .confirmEach:
            return try await c.confirmEach(queue: queue, size: size, count: count, maxSeconds: maxSeconds)
        case .consume:
            return try await c.consume(
                queue: queue, count: count, prefetch: Scenario.prefetch, ackEvery: Scenario.ackEvery, maxSeconds: maxSeconds)
        case .rpc, .rpcPatterns:
            return try await c.rpc(serverQueue: rpcQueue, size: size, count: count, maxSeconds: maxSeconds)
        case .fieldTable:
            return try await c.fieldTable(count: count)
        case .envelope:
            throw BenchError("the envelope scenario has no C implementation")
        case .publishTLS, .consumeTLS:
            preconditionFailure("a workload is never a TLS kind")
        }
    }

    /// The Swift side of the scenario, its loop isolated to `isolation` (the caller's actor,
    /// or none for a nonisolated task): every `await` in the loop starts from that executor.
    /// `onConnectionExecutor`: the loop prefers the connection's executor (``Caller/connection``).
    func runSwift(
        _ scenario: Scenario, count: Int, onConnectionExecutor: Bool = false, isolation: isolated (any Actor)?
    ) async throws -> RunResult {
        let queue = queue(for: scenario)
        let size = scenario.size
        var swift = try sides(scenario).swift
        swift.onConnectionExecutor = onConnectionExecutor
        switch scenario.kind.workload {
        case .publish, .publishHeaders:
            return try await swift.publish(
                queue: queue, size: size, count: count, headers: scenario.kind == .publishHeaders, maxSeconds: maxSeconds)
        case .confirmStream:
            return try await swift.confirmStream(
                queue: queue, size: size, count: count, window: Scenario.confirmWindow, maxSeconds: maxSeconds)
        case .confirmEach:
            return try await swift.confirmEach(queue: queue, size: size, count: count, maxSeconds: maxSeconds)
        case .consume:
            return try await swift.consume(
                queue: queue, count: count, prefetch: Scenario.prefetch, ackEvery: Scenario.ackEvery, maxSeconds: maxSeconds)
        case .rpc:
            return try await swift.rpc(serverQueue: rpcQueue, size: size, count: count, maxSeconds: maxSeconds)
        case .rpcPatterns:
            return try await swift.rpcPatterns(serverQueue: rpcQueue, size: size, count: count, maxSeconds: maxSeconds)
        case .fieldTable:
            return await swift.fieldTable(count: count)
        case .envelope:
            return try await swift.envelope(size: size, count: count)
        case .publishTLS, .consumeTLS:
            preconditionFailure("a workload is never a TLS kind")
        }
    }

    /// What the scenario's check value should be; a mismatch means the run did not do what
    /// it claims (lost messages, nacks, mismatched replies), reported next to the numbers.
    func problem(_ scenario: Scenario, _ result: RunResult, count: Int) async throws -> String? {
        let expected: UInt64
        let what: String
        var check = result.check
        switch scenario.kind.workload {
        case .publish, .publishHeaders:
            expected = UInt64(min(count, Scenario.maxQueueLength))
            what = "messages in the queue"
            // The declare-ok that ends the run proves the channel has routed every publish,
            // but the queue process answers queue.declare ahead of the messages still in its
            // mailbox (RabbitMQ prioritises it), so its count can lag: give it a moment.
            for _ in 0..<40 where check != expected {
                try await Task.sleep(for: .milliseconds(50))
                check = UInt64(try await baseline(for: scenario).counts(queue(for: scenario)).messages)
            }
        case .confirmStream, .confirmEach:
            expected = 0
            what = "nacks"
        case .consume:
            expected = UInt64(count * scenario.size)
            what = "body bytes received"
        case .rpc:
            expected = UInt64(count)
            what = "replies with the request's correlation id and body"
        case .fieldTable:
            expected = UInt64(count)
            what = "round trips that gave back the table"
        case .rpcPatterns:
            expected = UInt64(count)
            what = "replies whose body equals the request"
        case .envelope:
            expected = UInt64(count)
            what = "decoded envelopes with the id and data encoded"
        case .publishTLS, .consumeTLS:
            preconditionFailure("a workload is never a TLS kind")
        }
        if result.messages != UInt64(count) { return "\(result.messages) of \(count) messages" }
        if check != expected { return "\(what): \(check), expected \(expected)" }
        return nil
    }

    /// Deletes the queues of the scenarios that ran (a broker-free run touches no broker).
    func cleanUp(_ kinds: [Scenario.Kind]) async {
        for kind in Scenario.Kind.allCases where kind.usesQueue && kinds.contains(kind) {
            try? await (kind.overTLS ? tls?.c ?? c : c).deleteQueue("\(prefix).\(kind.rawValue)")
        }
    }

    /// The C baseline on the scenario's endpoint.
    func baseline(for scenario: Scenario) throws -> CBaseline { try sides(scenario).c }
}
