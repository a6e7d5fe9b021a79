import CRabbitMQBaseline
import RabbitMQ

/// The scenarios written with the public API of the RabbitMQ module, the way an
/// application would use it. Each opens a connection of its own; only the loop between the
/// two samples is measured.
struct SwiftScenarios: Sendable {
    let endpoint: BenchEndpoint
    /// The loop runs in a task that prefers its connection's executor (``Caller/connection``).
    var onConnectionExecutor = false

    static let replyTo = "amq.rabbitmq.reply-to"

    /// The same six headers as the C baseline's publish-headers scenario.
    static let headers: RabbitMQFieldTable = [
        "trace-id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "attempt": .int64(1),
        "origin": "rabbitmq-bench",
        "sampled": true,
        "created": .timestamp(1_700_000_000),
        "weight": .double(0.5),
    ]

    /// The same body bytes as the C baseline's.
    static func body(size: Int) -> [UInt8] {
        (0..<size).map { UInt8(ascii: "a") + UInt8($0 % 26) }
    }

    func publish(queue: String, size: Int, count: Int, headers: Bool, maxSeconds: Double, isolation: isolated (any Actor)? = #isolation) async throws -> RunResult {
        try await withConnection(maxSeconds: maxSeconds) { connection, deadline in
            let channel = try await connection.openChannel()
            let body = Self.body(size: size)
            var properties = RabbitMQProperties(deliveryMode: .transient)
            if headers { properties.headers = Self.headers }
            let start = RunResult.sample()
            for sent in 0..<count {
                try await channel.publish(body, routingKey: queue, properties: properties)
                if sent & 1023 == 1023 { try deadline.check(sent) }
            }
            // As in C: the declare-ok proves the broker has processed every publish before it.
            let declared = try await channel.queueDeclare(queue, passive: true)
            let end = RunResult.sample()
            return RunResult(
                messages: UInt64(count), start: start, end: end, p50: nil, p99: nil,
                check: UInt64(declared.messageCount))
        }
    }

    func confirmStream(queue: String, size: Int, count: Int, window: Int, maxSeconds: Double, isolation: isolated (any Actor)? = #isolation) async throws -> RunResult {
        try await withConnection(maxSeconds: maxSeconds) { connection, deadline in
            let channel = try await connection.openChannel()
            try await channel.confirmSelect(maxOutstanding: window)
            let body = Self.body(size: size)
            let properties = RabbitMQProperties(deliveryMode: .transient)
            // A ring of the newest `window` confirmations: the oldest is checked before its slot
            // is reused, so every outcome is looked at and at most `window` are outstanding.
            var ring: [RabbitMQConfirmation?] = Array(repeating: nil, count: window)
            var nacks: UInt64 = 0
            let start = RunResult.sample()
            for sent in 0..<count {
                let slot = sent % window
                if let oldest = ring[slot], try await oldest.outcome() != .acked { nacks += 1 }
                ring[slot] = try await channel.publishWithConfirm(body, routingKey: queue, properties: properties)
                if sent & 1023 == 1023 { try deadline.check(sent) }
            }
            for sent in max(0, count - window)..<count {
                if let confirmation = ring[sent % window], try await confirmation.outcome() != .acked { nacks += 1 }
            }
            let end = RunResult.sample()
            return RunResult(messages: UInt64(count), start: start, end: end, p50: nil, p99: nil, check: nacks)
        }
    }

    func confirmEach(queue: String, size: Int, count: Int, maxSeconds: Double, isolation: isolated (any Actor)? = #isolation) async throws -> RunResult {
        try await withConnection(maxSeconds: maxSeconds) { connection, deadline in
            let channel = try await connection.openChannel()
            try await channel.confirmSelect(maxOutstanding: 1)
            let body = Self.body(size: size)
            let properties = RabbitMQProperties(deliveryMode: .transient)
            var latencies = [UInt64](repeating: 0, count: count)
            var nacks: UInt64 = 0
            let start = RunResult.sample()
            for sent in 0..<count {
                let started = crmq_bench_monotonic_ns()
                let outcome = try await channel.publishAndWaitForConfirm(body, routingKey: queue, properties: properties)
                latencies[sent] = crmq_bench_monotonic_ns() - started
                if outcome != .acked { nacks += 1 }
                if sent & 255 == 255 { try deadline.check(sent) }
            }
            let end = RunResult.sample()
            let (p50, p99) = RunResult.percentiles(&latencies)
            return RunResult(messages: UInt64(count), start: start, end: end, p50: p50, p99: p99, check: nacks)
        }
    }

    func consume(queue: String, count: Int, prefetch: Int, ackEvery: Int, maxSeconds: Double, isolation: isolated (any Actor)? = #isolation) async throws -> RunResult {
        try await withConnection(maxSeconds: maxSeconds) { connection, deadline in
            let channel = try await connection.openChannel()
            try await channel.qos(prefetchCount: UInt16(prefetch))
            let consumer = try await channel.consume(queue: queue)
            var received = 0
            var bytes: UInt64 = 0
            let start = RunResult.sample()
            // Bounded by count; a stuck broker is cut off by the deadline (it closes the connection).
            for try await delivery in consumer {
                received += 1
                bytes += UInt64(delivery.body.count)
                if received % ackEvery == 0 || received == count { try delivery.ack(multiple: true) }
                if received == count { break }
                if received & 1023 == 1023 { try deadline.check(received) }
            }
            guard received == count else { throw BenchError("the consumer ended after \(received) of \(count) messages") }
            // As in C: a synchronous method after the last ack; its reply means the broker has the ack.
            try await channel.qos(prefetchCount: UInt16(prefetch))
            let end = RunResult.sample()
            return RunResult(messages: UInt64(count), start: start, end: end, p50: nil, p99: nil, check: bytes)
        }
    }

    func rpc(serverQueue: String, size: Int, count: Int, maxSeconds: Double, isolation: isolated (any Actor)? = #isolation) async throws -> RunResult {
        try await withConnection(maxSeconds: maxSeconds) { connection, deadline in
            let channel = try await connection.openChannel()
            let replies = try await channel.consume(queue: Self.replyTo, autoAck: true)
            var iterator = replies.makeAsyncIterator()
            let body = Self.body(size: size)
            var latencies = [UInt64](repeating: 0, count: count)
            var matched: UInt64 = 0
            let start = RunResult.sample()
            for call in 0..<count {
                let started = crmq_bench_monotonic_ns()
                let correlationID = String(call)
                try await channel.publish(
                    body, routingKey: serverQueue,
                    properties: RabbitMQProperties(correlationID: correlationID, replyTo: Self.replyTo))
                guard let reply = try await iterator.next() else {
                    throw BenchError("the reply consumer ended after \(call) calls")
                }
                latencies[call] = crmq_bench_monotonic_ns() - started
                if reply.properties.correlationID == correlationID && reply.body == body { matched += 1 }
                if call & 255 == 255 { try deadline.check(call) }
            }
            let end = RunResult.sample()
            let (p50, p99) = RunResult.percentiles(&latencies)
            return RunResult(messages: UInt64(count), start: start, end: end, p50: p50, p99: p99, check: matched)
        }
    }

    // MARK: Plumbing

    /// A deadline checked inside the loops (every 256 or 1024 messages, like the C side).
    struct Deadline: Sendable {
        let nanoseconds: UInt64

        func check(_ done: Int) throws {
            if crmq_bench_monotonic_ns() > nanoseconds { throw BenchError("timed out after \(done) messages") }
        }
    }

    /// Opens a connection, runs `body` on the caller's executor (`isolation`), closes the
    /// connection. When `maxSeconds` pass first, the connection is closed under the body,
    /// which fails whatever it awaits, so no run hangs.
    func withConnection(
        isolation: isolated (any Actor)? = #isolation, maxSeconds: Double,
        _ body: nonisolated(nonsending) (RabbitMQConnection, Deadline) async throws -> RunResult
    ) async throws -> RunResult {
        let connection = try await RabbitMQConnection.connect(configuration: endpoint.configuration)
        let deadline = Deadline(nanoseconds: crmq_bench_monotonic_ns() + UInt64(maxSeconds * 1e9))
        // Off the caller's executor: it only sleeps, and is cancelled as soon as the body ends.
        let watchdog = Task.detached {
            try? await Task.sleep(for: .seconds(maxSeconds))
            if Task.isCancelled { return false }
            try? await connection.close()
            return true
        }
        let result: Result<RunResult, any Error>
        do {
            if onConnectionExecutor {
                result = .success(try await withTaskExecutorPreference(connection.executor) { try await body(connection, deadline) })
            } else {
                result = .success(try await body(connection, deadline))
            }
        } catch {
            result = .failure(error)
        }
        watchdog.cancel()
        try? await connection.close()
        // A body that finished is its own answer, even if the watchdog fired just after.
        if case .failure = result, await watchdog.value { throw BenchError("timed out after \(maxSeconds) s") }
        return try result.get()
    }
}
