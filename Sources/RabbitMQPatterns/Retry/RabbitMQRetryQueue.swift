import Foundation
import RabbitMQ

/// Work with delayed retries and a dead-letter queue, kept by the broker: a failed message
/// waits in a delay queue (1 s, then 5 s, then 25 s by default) and comes back; after its
/// last attempt, or at once when it cannot succeed, it is parked in a dead-letter queue with
/// the reason in its headers. Never a hot requeue loop, and no retry state in memory: a
/// consumer can crash at any time.
///
/// ``declare(_:on:configuration:)`` sets up, for a name `N`:
/// - the durable direct exchange `N` and work queue `N`, bound with routing key `N`;
/// - one delay queue per distinct delay, `N.retry.<delay>` (`N.retry.1s`, `N.retry.250ms`),
///   whose message TTL dead-letters back to exchange `N`;
/// - the dead-letter (parking) queue `N.dead-letter`, which is also the work queue's
///   dead-letter target (``Configuration/workQueueDeadLetters``): what the broker itself
///   gives up on (a quorum queue's delivery limit, a TTL or length limit set by a policy) is
///   parked, with the broker's `x-death` reason, instead of dropped.
///
/// ``run(_:handler:)`` consumes the work queue and, for each message:
/// - handler returns: ack;
/// - handler throws: republish to the next delay queue with ``retryCountHeader`` + 1,
///   ``lastErrorHeader`` and ``firstFailureAtHeader``, or park it when the delays are used up;
/// - handler throws ``RabbitMQPatternsError/permanentFailure(_:file:line:)``, or the body is
///   not a valid envelope: park it at once, with the reason in ``lastErrorHeader``.
///
/// Each republish is confirmed by the broker before the original is acknowledged, so a crash
/// in between can duplicate a message but never lose one. The broker's own hop from a delay
/// queue back to the work queue is dead-lettering, which RabbitMQ does at most once: a message
/// whose delay ends while the work queue cannot take it (a quorum queue without a leader
/// during a failover, a full queue) can be dropped there, with classic and quorum queues
/// alike. If a republish fails, ``run(_:handler:)``
/// stops with the error and the unacknowledged message returns to the work queue.
///
/// With ``Configuration/quorum`` every queue is a quorum queue. A quorum queue counts how
/// often it hands out a message (`x-delivery-count`, `RabbitMQDelivery/deliveryCount`)
/// and gives up on it at its delivery limit: 20 by default from RabbitMQ 4.0, none on 3.x
/// unless ``Configuration/deliveryLimit`` sets one. The retry ladder does not use up that
/// limit: a failed attempt is republished as a new message (without the count) and the
/// original acknowledged, so every attempt is a first delivery. What the count does catch
/// is a message that keeps coming back unsettled: its consumer crashed, its channel or
/// connection was lost, ``run(_:handler:)`` was cancelled or stopped by a failed republish
/// while handling it (RabbitMQ 3.10 and 4.0 count each of those; 4.3 changed what counts).
/// At the limit the work queue dead-letters it into `N.dead-letter` with the broker's
/// `x-death` reason `delivery_limit` and our headers as they were (no
/// ``deadLetterReasonHeader``); a classic work queue would hand it out forever.
///
/// A parked message can be replayed: moved by an operator (a shovel, the management UI's
/// move, a script) from `N.dead-letter` back to exchange `N` with routing key `N`, or to queue
/// `N`, headers as they are. The consumer recognises it (our ``deadLetterReasonHeader``,
/// which only parking stamps; or, for what the broker parked, an `x-death` entry for the work
/// queue, which only the broker's own dead-lettering writes, provided the replay keeps that
/// header) and starts a new ladder: attempt 1, ``retryCountHeader`` reset, the old count
/// added to ``previousRetryCountHeader``, ``replayCountHeader`` + 1, the parking reason
/// dropped. ``lastErrorHeader`` and ``firstFailureAtHeader`` are kept, so the handler still
/// sees why and since when it failed.
///
/// Duplicates are bounded. A delivery whose connection is lost while its handler runs is
/// handed out again (`redelivered`) on the recovered connection, and the first copy's
/// acknowledgement can no longer reach the broker. ``run(_:handler:)`` remembers the attempts
/// it has put on the ladder (by message id, retry count and replay count, the last 10,000):
/// a second copy of one whose republish is confirmed is acknowledged without a second
/// republish, and without running the handler again when it arrives after that. The handler
/// may still run twice for one attempt (at-least-once), but one copy climbs the ladder; two
/// copies whose republishes overlap both go on (never trading a duplicate for a loss). What
/// is left: a republish in flight when the connection is lost is sent again by the connection's
/// recovery (`RabbitMQConfirmation.wasRepublished`), so the broker can hold one extra copy per
/// republish in flight at a reconnect (at most ``Configuration/concurrency``); a consumer
/// process that dies between a republish and its acknowledgement leaves one extra copy per
/// message it had in hand; messages without a message id are not tracked.
///
/// ```swift
/// let emails = try await RabbitMQRetryQueue.declare("emails", on: connection)
/// try await emails.publish(RabbitMQEnvelope(type: "email.send", data: email))
/// try await emails.run(Email.self) { attempt in
///     try await mailer.send(attempt.data)   // throws: retried in 1 s, 5 s, 25 s, then parked
/// }
/// ```
public struct RabbitMQRetryQueue: Sendable {
    /// The base name: of the work exchange and the work queue.
    public let name: String
    /// The retry ladder and consumer settings.
    public let configuration: Configuration
    /// The confirm-mode channel ``publish(_:)`` uses. When the broker closes it (a publish it
    /// refused), the next use opens a new one: one bad message does not break the handle.
    public var channel: RabbitMQChannel { publisher.current }
    private let publisher: PublishingChannel

    init(name: String, configuration: Configuration, channel: RabbitMQChannel) {
        self.name = name
        self.configuration = configuration
        self.publisher = PublishingChannel(channel)
    }

    /// The work exchange (`N`); publish here with routing key ``name``, or use ``publish(_:)``.
    public var workExchange: String { name }
    /// The work queue (`N`).
    public var workQueue: String { name }
    /// The delay queue of each retry, in order (`N.retry.1s`, ...); equal delays share a queue.
    public var delayQueues: [String] { configuration.delays.map { Self.delayQueueName(name, $0) } }
    /// The dead-letter (parking) queue (`N.dead-letter`).
    public var deadLetterQueue: String { name + ".dead-letter" }

    /// Declares the exchange and every queue, on a new channel that the handle keeps for
    /// publishing. Idempotent; changing the delays adds delay queues and leaves the old ones
    /// to drain back into the work queue.
    ///
    /// - Throws: ``RabbitMQPatternsError`` (`invalidConfiguration`), `RabbitMQError` (406 when
    ///   one of the names exists with other settings).
    public static func declare(
        _ name: String, on connection: RabbitMQConnection, configuration: Configuration = .init()
    ) async throws -> Self {
        guard !name.isEmpty else { throw RabbitMQPatternsError.invalidConfiguration("the retry queue needs a name") }
        try configuration.validate()
        let queue = Self(name: name, configuration: configuration, channel: try await connection.openChannel())
        do {
            try await queue.declareTopology()
            try await queue.channel.confirmSelect()
            return queue
        } catch {
            try? await queue.channel.close()
            throw error
        }
    }

    private func declareTopology() async throws {
        let durable = configuration.durable
        try await channel.exchangeDeclare(workExchange, type: .direct, durable: durable)
        // The work queue dead-letters what the broker gives up on (a quorum queue's delivery
        // limit, a TTL or length policy) into the parking queue, through the default exchange,
        // rather than dropping it.
        let parking: RabbitMQFieldTable =
            configuration.workQueueDeadLetters
            ? ["x-dead-letter-exchange": "", "x-dead-letter-routing-key": .string(deadLetterQueue)] : [:]
        try await declareQueue(workQueue, arguments: parking, deliveryLimit: configuration.deliveryLimit)
        try await channel.queueBind(queue: workQueue, exchange: workExchange, routingKey: name)
        var declared = Set<String>()
        for (queue, delay) in zip(delayQueues, configuration.delays) where declared.insert(queue).inserted {
            try await declareQueue(
                queue,
                arguments: [
                    "x-message-ttl": .int64(delay.wholeMilliseconds),
                    "x-dead-letter-exchange": .string(workExchange),
                    "x-dead-letter-routing-key": .string(name),
                ])
        }
        try await declareQueue(deadLetterQueue)
    }

    private func declareQueue(
        _ queue: String, arguments: RabbitMQFieldTable = [:], deliveryLimit: RabbitMQQueueType.DeliveryLimit? = nil
    ) async throws {
        if configuration.quorum {
            try await channel.queueDeclare(queue, type: .quorum(deliveryLimit: deliveryLimit), arguments: arguments)
        } else {
            // No x-queue-type, as before quorum queues were an option.
            try await channel.queueDeclare(queue, durable: configuration.durable, arguments: arguments)
        }
    }

    /// Publishes an envelope to the work queue and waits for the broker's confirmation.
    ///
    /// - Throws: ``RabbitMQPatternsError`` (`unroutable` when the work queue is gone,
    ///   `nacked`, `invalidEnvelope`), `RabbitMQError`.
    public func publish<Payload>(_ envelope: RabbitMQEnvelope<Payload>) async throws {
        try await publisher.usable().publishConfirmed(
            envelope, exchange: workExchange, routingKey: name, persistent: configuration.durable, mandatory: true)
    }

    /// Consumes the work queue until the task is cancelled or the channel or connection
    /// fails, running `handler` for each message (see the type's description for what happens
    /// after it). Runs on a channel of its own; several consumers may run at once.
    ///
    /// On graceful shutdown (from a `ServiceGroup`, see ``RabbitMQRetryQueueService``) it stops
    /// consuming (`basic.cancel`), lets the handlers in flight finish, settles their messages,
    /// and returns. Cancelling the task instead abandons the handlers; their messages are
    /// requeued.
    ///
    /// - Throws: `RabbitMQError` or ``RabbitMQPatternsError`` when a republish fails; the
    ///   message being handled is then requeued by the broker.
    public func run<Payload>(
        _ type: Payload.Type, handler: @escaping @Sendable (RabbitMQRetryAttempt<Payload>) async throws -> Void
    ) async throws {
        let channel = try await self.channel.connection.openChannel()
        do {
            try await channel.qos(prefetchCount: configuration.concurrency)
            try await channel.confirmSelect()
            let consumer = try await channel.consume(queue: workQueue)
            let ledger = SharedRetryLedger()
            // Graceful shutdown cancels the consumer: the messages in hand are handled and
            // settled (acknowledged, or republished for a retry), then run() returns.
            try await consumer.stoppingOnGracefulShutdown {
                try await withThrowingDiscardingTaskGroup { group in
                    for try await delivery in consumer {
                        if group.isCancelled { break }
                        group.addTask {
                            do {
                                try await channel.connection.tracingProcess(of: delivery, queue: workQueue) { span in
                                    try await handle(
                                        delivery, on: channel, ledger: ledger,
                                        handler: Self.recordingFailures(of: handler, on: span))
                                }
                            } catch {
                                // A failed republish stops the consumer at once (the loop above
                                // may be waiting for a delivery that never comes), and ends run()
                                // with the error: the channel closes and the broker requeues what
                                // is unacknowledged.
                                consumer.stop(throwing: error)
                                throw error
                            }
                        }
                    }
                }
            }
        } catch {
            try? await channel.close()
            if error is CancellationError { return }
            throw error
        }
        try? await channel.close()
    }

    private func handle<Payload>(
        _ delivery: RabbitMQDelivery, on channel: RabbitMQChannel, ledger: SharedRetryLedger,
        handler: @Sendable (RabbitMQRetryAttempt<Payload>) async throws -> Void
    ) async throws {
        let headers = RetryDecision.startingOver(delivery.properties.headers, workQueue: workQueue)
        var properties = delivery.properties
        properties.headers = headers
        let key = delivery.properties.messageID.map {
            RetryLedger.Key(
                messageID: $0, retryCount: RetryDecision.retryCount(headers),
                replayCount: RetryDecision.replayCount(headers))
        }
        // A copy handed out again after a reconnect, whose retry this consumer has put on the
        // ladder already: the attempt is over.
        if delivery.redelivered, let key, ledger.isOnTheLadder(key) {
            try delivery.ack()
            return
        }
        let failure: RetryDecision.Failure
        do {
            let envelope = try RabbitMQEnvelope<Payload>(decoding: delivery.body)
            let attempt = RabbitMQRetryAttempt(
                envelope: envelope, attempt: RetryDecision.retryCount(headers) + 1,
                maxAttempts: configuration.delays.count + 1,
                lastError: headers?[Self.lastErrorHeader]?.stringValue,
                firstFailureAt: headers?[Self.firstFailureAtHeader]?.stringValue.flatMap(EnvelopeTimestamp.parse),
                properties: properties, replayCount: RetryDecision.replayCount(headers),
                previousRetryCount: RetryDecision.previousRetryCount(headers))
            do {
                try await handler(attempt)
                try delivery.ack()
                return
            } catch let error as RabbitMQPatternsError where error.code == .permanentFailure {
                failure = .permanent(error.message)
            } catch {
                // Shutting down: leave the message unacknowledged; the broker requeues it.
                if Task.isCancelled { return }
                failure = .transient(ErrorText.describe(error))
            }
        } catch {
            failure = .invalidEnvelope("invalid envelope: \(error.message)")
        }
        let decision = RetryDecision.decide(
            headers: headers, failure: failure, delayCount: configuration.delays.count, now: Date())
        // Another copy of this attempt (a reconnect's redelivery) may be on the ladder already.
        // Only a confirmed one makes this copy redundant: one still in flight may yet fail.
        let claim = key.map(ledger.claim)
        if claim == .onTheLadder {
            try delivery.ack()
            return
        }
        let owned = claim == .claimed ? key : nil
        properties.headers = decision.headers
        // The delay queue's TTL decides when it comes back; a per-message TTL would interfere.
        properties.expiration = nil
        let target: String
        switch decision.destination {
        case .delay(let index): target = delayQueues[index]
        case .park: target = deadLetterQueue
        }
        do {
            try await channel.publishConfirmed(
                delivery.body, exchange: "", routingKey: target, properties: properties, mandatory: true)
        } catch {
            if let owned { ledger.release(owned) }
            throw error
        }
        if let owned { ledger.confirm(owned) }
        try delivery.ack()
    }

    /// Deletes the exchange and every queue of this retry queue, messages included.
    public func delete() async throws {
        let channel = try await publisher.usable()
        for queue in [workQueue, deadLetterQueue] + Set(delayQueues).sorted() {
            try await channel.queueDelete(queue)
        }
        try await channel.exchangeDelete(workExchange)
    }

    /// Closes the handle's publishing channel (the queues stay).
    public func close() async throws {
        try await publisher.close()
    }

    static func delayQueueName(_ name: String, _ delay: Duration) -> String {
        let milliseconds = delay.wholeMilliseconds
        let text = milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
        return "\(name).retry.\(text)"
    }
}
