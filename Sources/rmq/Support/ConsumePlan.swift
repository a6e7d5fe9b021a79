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

        bindings = try command.bindings.map { text in
            guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else {
                throw CLIError("--bind takes EXCHANGE:KEY, got '\(text)'")
            }
            return Binding(exchange: String(text[..<colon]), key: String(text[text.index(after: colon)...]))
        }
    }

    /// What a run did, for the summary of a run that a signal stopped.
    struct Summary: Sendable {
        var linesWritten: Int
        var acknowledged: Int
    }

    /// Consumes until `count` messages or until cancelled (a signal, or idle), reconnecting
    /// after connection failures. The first connection must succeed: an unreachable broker
    /// is an error, not something to wait for. A reader that goes away ends the run with
    /// exit status 141 (as if SIGPIPE had killed us) and a line saying what was acknowledged.
    func consume(configuration: RabbitMQConfiguration, progress: ConsumeProgress) async throws -> Summary {
        // One for the whole run, so the progress count goes on across reconnections.
        let output = DeliveryOutput()
        defer { output.finish() }
        do {
            try await consume(configuration: configuration, progress: progress, output: output)
        } catch is StandardOutputWriter.ReaderGone {
            throw CLIError(
                "standard output closed by its reader (broken pipe): \(output.linesWritten) lines read by it, "
                    + "\(output.acknowledged) messages acknowledged; the unacknowledged ones go back to the queue",
                exitStatus: 128 + SIGPIPE)
        }
        return Summary(linesWritten: output.linesWritten, acknowledged: output.acknowledged)
    }

    private func consume(configuration: RabbitMQConfiguration, progress: ConsumeProgress, output: DeliveryOutput) async throws {
        // Every connection is this loop's own, never recovered by the library under the
        // consumer: a recovered channel would keep the first one's prefetch (with --count,
        // the broker would send past what is left, and those come back marked redelivered
        // though nobody saw them), and acknowledgements held back on the lost channel would
        // look settled. A new connection gets a new channel, prefetch and count of acks.
        var configuration = configuration
        configuration.recovery.isEnabled = false
        var connectedBefore = false
        var failures = 0
        while true {
            // Never a consumer with nothing left to take (a prefetch of 0 is no limit at all).
            // Not reached today: at the count the run returns, or throws.
            if let count, progress.count >= count { return }
            do {
                let connection = try await RabbitMQConnection.connect(configuration: configuration)
                connectedBefore = true
                failures = 0
                // A signal or the idle timeout while connecting (connect does not stop for
                // one): no channel, no consumer.
                if Task.isCancelled {
                    try? await connection.close()
                    return
                }
                do {
                    try await consume(on: connection, progress: progress, output: output)
                    try? await connection.close()
                    return
                } catch {
                    try? await connection.close()
                    throw error
                }
            } catch let error as CountAcknowledgementsUncertain {
                // Said even when a signal came meanwhile: a run whose last acks may be lost
                // never ends as if they were made.
                throw CLIError(error.description)
            } catch {
                // Cancelled (enough messages, or idle): whatever ended the consumer, we are done.
                if Task.isCancelled { return }
                guard connectedBefore, Self.isWorthReconnecting(error) else { throw error }
                progress.disconnected()
                failures += 1
                // Back off, up to 5 s, so a broker that is down is not hammered.
                let delay = min(5000, 100 << min(failures, 6))
                let what = failures == 1 ? "connection lost" : "reconnecting failed"
                output.interruptProgress()
                StandardStreams.writeError("rmq: \(what) (\(CLIError.message(for: error))); retrying in \(delay) ms")
                // A signal (or the idle timeout) cancels the wait: done, like a cancelled consumer.
                do {
                    try await Task.sleep(for: .milliseconds(delay))
                } catch {
                    return
                }
            }
        }
    }

    /// Consumes on one connection until `count` is reached, the task is cancelled (then what
    /// was gathered is written and everything written acknowledged), or the consumer fails.
    ///
    /// With `count`, the broker must never send more than is left to take, or the extra
    /// deliveries come back redelivered: the prefetch is at most what is left, and while
    /// deliveries are written as they come, acknowledgements stop `prefetch` short of the
    /// count (each ack lets the broker send one more) until the last one is in.
    private func consume(on connection: RabbitMQConnection, progress: ConsumeProgress, output: DeliveryOutput) async throws {
        output.startChannel()
        let channel = try await connection.openChannel()
        if declare {
            try await channel.queueDeclare(
                queue, durable: durable, arguments: quorum ? ["x-queue-type": "quorum"] : [:])
        }
        for binding in bindings {
            try await channel.queueBind(queue: queue, exchange: binding.exchange, routingKey: binding.key)
        }
        let remaining = count.map { $0 - progress.count }
        let window = remaining.map { UInt16(clamping: min(Int(prefetch), $0)) } ?? prefetch
        let acknowledgeable = remaining.map { $0 - Int(window) }
        if !autoAck { try await channel.qos(prefetchCount: window) }
        // Stopped while setting up (these calls do not stop for a signal): no consumer, so
        // nothing is delivered only to go back. (A signal during basic.consume itself still
        // gets one, whose deliveries go back, marked redelivered.)
        if Task.isCancelled { return }
        let consumer = try await channel.consume(queue: queue, autoAck: autoAck)
        progress.consuming()
        var deliveries = consumer.makeAsyncIterator()
        do {
            try await take(
                &deliveries, consumer: consumer, channel: channel, connection: connection, window: window,
                acknowledgeable: acknowledgeable, progress: progress, output: output)
        } catch let error as RabbitMQError where error.code == .consumerCancelled && channel.isOpen {
            // The broker cancelled the consumer (its queue was deleted, or moved with a
            // node): no delivery can follow, so what --count held back is acknowledged now,
            // not left to come again on the next connection.
            do { try await output.flush() } catch is RabbitMQError {}
            throw error
        }
    }

    /// The consuming loop of ``consume(on:progress:output:)``: returns at the count or once
    /// stopped, throws when the consumer or its connection fails.
    private func take(
        _ deliveries: inout RabbitMQConsumer.AsyncIterator, consumer: RabbitMQConsumer, channel: RabbitMQChannel,
        connection: RabbitMQConnection, window: UInt16, acknowledgeable: Int?, progress: ConsumeProgress, output: DeliveryOutput
    ) async throws {
        while let delivery = try await deliveries.next() {
            // Handed out after the connection or channel was lost (the library hands out
            // what it had received): the broker has put it back, it comes again, and no ack
            // can reach it now. Not written, not counted, and neither are those of the batch
            // gathered before it. (An auto-ack delivery was settled when sent: written.)
            if !autoAck && !channel.isOpen {
                progress.forget(output.dropUnwritten())
                break
            }
            output.append(DeliveryJSON.line(for: delivery), for: delivery, acknowledge: !autoAck)
            let received = progress.record()
            if let count, received >= count {
                progress.countReached()
                // Cancelled first: an ack before it would let the broker send more.
                try? await consumer.cancel()
                let acknowledgedBefore = output.acknowledged
                do {
                    try await output.flush()
                    // An ack is only handed to the socket: a round trip on the channel after
                    // it (the broker takes a channel's methods in order) shows it arrived.
                    try await channel.qos(prefetchCount: window)
                } catch let error as RabbitMQError {
                    // Every line is out, but the acks may have gone with the connection (or
                    // channel): then the broker puts those messages back. An error, not
                    // retried: a new consumer could only take more than the count.
                    let uncertain = output.unacknowledged + output.acknowledged - acknowledgedBefore
                    throw CountAcknowledgementsUncertain(
                        description: "--count \(count) reached, but the broker did not confirm that it took the last "
                            + "\(uncertain) acknowledgements (\(CLIError.message(for: error))): those messages may go back to "
                            + "the queue and be delivered again")
                }
                return
            }
            // Written (then acknowledged) before waiting for more: a line is out as soon as
            // nothing else is ready, and the prefetch window never fills with our own acks
            // (with a count, the held-back ones fill it exactly when the last is in).
            if !deliveries.hasDeliveryInHand || output.isFull { try await output.flush(acknowledgingUpTo: acknowledgeable) }
            if Task.isCancelled { break }
        }
        if Task.isCancelled {
            // Stopped (a signal, or idle): take no more; what was written is acknowledged.
            try? await consumer.cancel()
            try await output.flush()
            return
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

/// --count was reached, and the broker may not have taken the last acknowledgements: the run
/// ends with this (exit 1), never as if they were made, and never on a new connection.
private struct CountAcknowledgementsUncertain: Error, CustomStringConvertible {
    var description: String
}
