import RabbitMQ

/// The envelopes arriving on a queue, as an `AsyncSequence` of ``RabbitMQEnvelopeMessage``s,
/// from `subscribe` on ``RabbitMQDirectExchange``, ``RabbitMQTopicExchange`` or
/// ``RabbitMQFanoutExchange``.
///
/// Acknowledge each message after handling it. A delivery that is not a valid envelope never
/// reaches you, and is never lost silently: it is rejected without requeue, so the broker
/// dead-letters it (into ``deadLetterQueue``, which every exchange type declares unless the
/// queue options name another dead-letter exchange) instead of handing it back forever; it is
/// counted in ``undecodableCount``, logged at warning on the connection's logger, and handed
/// to the `onUndecodable` callback given to `subscribe`.
///
/// Back-pressure is the prefetch count: the broker sends at most that many unacknowledged
/// messages. The subscription has a channel of its own; ``cancel()`` stops it, ends the
/// sequence and closes that channel, and unacknowledged messages go back to the queue.
///
/// ```swift
/// for try await message in subscription {
///     try await handle(message.data)
///     try message.ack()
/// }
/// ```
public struct RabbitMQSubscription<Payload: Codable & Sendable>: AsyncSequence, Sendable {
    /// Iterates the messages.
    public typealias Element = RabbitMQEnvelopeMessage<Payload>

    /// The queue consumed. A server-named queue (a fanout subscriber's) gets a new name when
    /// the connection recovers; this is always the current one
    /// (`RabbitMQConnection.currentName(ofQueue:)`).
    public var queue: String { channel.connection.currentName(ofQueue: declaredQueue) }
    /// Where rejected and undecodable messages of ``queue`` end up, when the subscription
    /// declared that queue: `<queue>.dead-letter` for direct and topic subscriptions,
    /// `<exchange>.dead-letter` for fanout ones. Nil when the queue options name a
    /// dead-letter exchange of their own.
    public let deadLetterQueue: String?
    /// The channel the subscription consumes on.
    public let channel: RabbitMQChannel
    /// How many deliveries were not valid envelopes (each rejected into the dead-letter
    /// exchange) since the subscription started.
    public var undecodableCount: Int { undecodable.count }
    let consumer: RabbitMQConsumer
    /// The name the queue was declared with; ``queue`` follows it across recoveries.
    let declaredQueue: String
    let undecodable: UndecodableDeliveries

    /// Opens a channel, sets the prefetch, lets `declare` set up the queue on it, and consumes.
    static func start(
        on connection: RabbitMQConnection, prefetch: UInt16, deadLetterQueue: String? = nil,
        onUndecodable: (@Sendable (RabbitMQUndecodableDelivery) -> Void)?,
        declare: (RabbitMQChannel) async throws -> String
    ) async throws -> Self {
        let channel = try await connection.openChannel()
        do {
            try await channel.qos(prefetchCount: prefetch)
            let queue = try await declare(channel)
            let consumer = try await channel.consume(queue: queue)
            return Self(
                deadLetterQueue: deadLetterQueue, channel: channel, consumer: consumer, declaredQueue: queue,
                undecodable: UndecodableDeliveries(logger: connection.logger, callback: onUndecodable))
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// Cancels the consumer and closes the subscription's channel; the sequence ends and
    /// unacknowledged messages return to the queue.
    public func cancel() async throws {
        if channel.isOpen { try await consumer.cancel() }
        try await channel.close()
    }

    /// An iterator over the messages; iterate a subscription from one task at a time.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: consumer.makeAsyncIterator(), subscription: self)
    }

    /// Iterates the messages, skipping (and dead-lettering) deliveries that are not envelopes.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: RabbitMQConsumer.AsyncIterator
        let subscription: RabbitMQSubscription

        /// The next valid envelope, or nil once the subscription is cancelled.
        /// - Throws: `RabbitMQError` when the broker cancels the consumer or the channel fails.
        public mutating func next() async throws -> RabbitMQEnvelopeMessage<Payload>? {
            try await next(isolation: #isolation)
        }

        /// What `for try await` calls: runs on the caller's executor, so a loop on an actor
        /// takes messages without a hop per message (the standard library's default would
        /// call ``next()`` from a context of its own).
        public mutating func next(
            isolation actor: isolated (any Actor)?
        ) async throws(any Error) -> RabbitMQEnvelopeMessage<Payload>? {
            while let delivery = try await base.next(isolation: actor) {
                do {
                    let envelope = try RabbitMQEnvelope<Payload>(decoding: delivery.body)
                    return RabbitMQEnvelopeMessage(envelope: envelope, delivery: delivery)
                } catch {
                    // Requeueing would hand the same bytes back at once, forever. A channel
                    // closed meanwhile (cancel()) has requeued it already: the sequence then
                    // ends as it does, not with this reject's error.
                    try? delivery.reject(requeue: false)
                    subscription.undecodable.record(
                        delivery, error: error, queue: subscription.queue, deadLetterQueue: subscription.deadLetterQueue)
                }
            }
            return nil
        }
    }
}
