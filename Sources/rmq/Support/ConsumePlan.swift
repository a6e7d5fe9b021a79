import Foundation
import RabbitMQ

/// The validated settings of one `rmq consume`, and the consuming loop that reconnects.
struct ConsumePlan: Sendable {
    struct Binding: Sendable {
        var exchange: String
        var key: String
    }

    var queue: String
    var declare: Bool
    var durable: Bool
    var quorum: Bool
    var bindings: [Binding]
    var prefetch: UInt16
    var count: Int?
    var autoAck: Bool

    init(command: ConsumeCommand) throws {
        queue = command.queue
        declare = command.declare
        // Durable unless --transient, which cannot go with --durable or --quorum (below).
        durable = !command.transient
        quorum = command.quorum
        prefetch = command.prefetch
        count = command.count
        autoAck = command.autoAck
        if command.transient && (command.durable || command.quorum) {
            throw CLIError("--transient cannot go with --durable or --quorum")
        }
        if let count = command.count, count < 1 { throw CLIError("--count must be at least 1") }
        if let idle = command.idleTimeout, !(idle > 0 && idle.isFinite) {
            throw CLIError("--idle-timeout must be a positive number of seconds")
        }
        bindings = try command.bindings.map { text in
            guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
                throw CLIError("--bind takes EXCHANGE:KEY, got '\(text)'")
            }
            return Binding(exchange: String(text[..<colon]), key: String(text[text.index(after: colon)...]))
        }
    }

    /// Consumes until `count` messages, reconnecting after connection failures. The first
    /// connection must succeed: an unreachable broker is an error, not something to wait for.
    func consume(configuration: RabbitMQConfiguration, progress: ConsumeProgress) async throws {
        var connectedBefore = false
        var failures = 0
        // One for the whole run, so the progress count goes on across reconnections.
        let output = DeliveryOutput()
        defer { output.finish() }
        while true {
            do {
                let connection = try await RabbitMQConnection.connect(configuration: configuration)
                connectedBefore = true
                failures = 0
                do {
                    try await consume(on: connection, progress: progress, output: output)
                    try? await connection.close()
                    return
                } catch {
                    try? await connection.close()
                    throw error
                }
            } catch {
                // Cancelled (enough messages, or idle): whatever ended the consumer, we are done.
                if Task.isCancelled { return }
                guard connectedBefore, Self.isWorthReconnecting(error) else { throw error }
                failures += 1
                // Back off, up to 5 s, so a broker that is down is not hammered.
                let delay = min(5000, 100 << min(failures, 6))
                let what = failures == 1 ? "connection lost" : "reconnecting failed"
                output.interruptProgress()
                StandardStreams.writeError("rmq: \(what) (\(CLIError.message(for: error))); retrying in \(delay) ms")
                try await Task.sleep(for: .milliseconds(delay))
            }
        }
    }

    /// Consumes on one connection until `count` is reached or the consumer fails.
    private func consume(on connection: RabbitMQConnection, progress: ConsumeProgress, output: DeliveryOutput) async throws {
        let channel = try await connection.openChannel()
        if declare {
            try await channel.queueDeclare(
                queue, durable: durable, arguments: quorum ? ["x-queue-type": "quorum"] : [:])
        }
        for binding in bindings {
            try await channel.queueBind(queue: queue, exchange: binding.exchange, routingKey: binding.key)
        }
        if !autoAck { try await channel.qos(prefetchCount: prefetch) }
        let consumer = try await channel.consume(queue: queue, autoAck: autoAck)
        progress.consuming()
        var deliveries = consumer.makeAsyncIterator()
        while let delivery = try await deliveries.next() {
            output.append(DeliveryJSON.line(for: delivery), for: delivery, acknowledge: !autoAck)
            let received = progress.record()
            if let count, received >= count {
                try await output.flush()
                try? await consumer.cancel()
                return
            }
            // Written (then acknowledged) before waiting for more: a line is out as soon as
            // nothing else is ready, and the prefetch window never fills with our own acks.
            if !deliveries.hasDeliveryInHand || output.isFull { try await output.flush() }
        }
        // Not cancelled by us, so the connection or channel went away under the consumer.
        throw connection.closeReason ?? channel.closeReason
            ?? RabbitMQError(code: .connectionClosed, message: "the consumer ended")
    }

    /// Connection-level failures and a cancelled consumer (its queue vanished with a node)
    /// are worth a new connection; a refused login or a missing queue are not.
    static func isWorthReconnecting(_ error: any Error) -> Bool {
        guard let error = error as? RabbitMQError else { return false }
        return error.isRetriable || error.scope == .connection || error.code == .consumerCancelled
    }
}
