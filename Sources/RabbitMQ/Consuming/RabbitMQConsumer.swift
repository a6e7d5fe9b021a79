/// The deliveries of one consumer, as an `AsyncSequence`.
///
/// Back-pressure comes from the broker: with manual acknowledgements it never has more than
/// the channel's prefetch count (``RabbitMQChannel/qos(prefetchCount:global:)``) unacknowledged
/// deliveries out, so the buffer here never holds more. With auto-ack there is no such bound.
///
/// The sequence ends normally after ``cancel()`` or a graceful connection close, and throws
/// ``RabbitMQError`` when the broker cancels the consumer (`consumerCancelled`, for example
/// because its queue was deleted), when its channel is closed by the broker, or when the
/// connection is lost for good. While the connection recovers it simply waits: recovery
/// registers the consumer again with the same tag, and messages that were not acknowledged
/// come back with `redelivered` set. Cancelling the iterating task, or dropping the consumer
/// and every iterator made from it, cancels the consumer; a loop that merely ends early
/// leaves it running, and a new iterator goes on where the last one stopped. Iterate from
/// one task at a time: a second task that waits for deliveries while another one does gets
/// an `invalidConfiguration` error. Deliveries that arrive after the cancel are requeued.
///
/// ```swift
/// let consumer = try await channel.consume(queue: "orders")
/// for try await delivery in consumer {
///     try handle(delivery.body)
///     try delivery.ack()
/// }
/// ```
public struct RabbitMQConsumer: AsyncSequence, Sendable {
    public typealias Element = RabbitMQDelivery

    /// The consumer tag (chosen by the library when none was given).
    public let consumerTag: String
    let channel: RabbitMQChannel
    let lifetime: DeliveryBufferLifetime

    init(consumerTag: String, channel: RabbitMQChannel, buffer: DeliveryBuffer) {
        self.consumerTag = consumerTag
        self.channel = channel
        self.lifetime = DeliveryBufferLifetime(buffer: buffer)
    }

    /// Cancels the consumer (`basic.cancel`) and waits for the broker to confirm it; the
    /// sequence then ends after the deliveries already received.
    public func cancel() async throws {
        guard channel.isOpen else { return }
        let shared = channel.shared
        let tag = consumerTag
        _ = try await shared.core.call { .cancelConsumer(shared, consumerTag: tag, $0) }
    }

    /// For this package's own modules: ends the sequence at once with `error` (the loop
    /// consuming it throws it next), cancels the consumer, and requeues what was buffered.
    /// Used when handling one delivery failed in a way that must stop the whole consumer.
    package func stop(throwing error: any Error) {
        lifetime.buffer.stop(throwing: error)
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(lifetime: lifetime)
    }

    /// Iterates the deliveries: takes them from a local batch, refilled once per batch.
    public struct AsyncIterator: AsyncIteratorProtocol {
        private let state: DeliveryIteratorState

        init(lifetime: DeliveryBufferLifetime) {
            state = DeliveryIteratorState(lifetime: lifetime)
        }

        /// Runs on the caller's executor (`nonisolated(nonsending)`, as every async function of
        /// this module), like ``next(isolation:)``, which `for try await` calls.
        public mutating func next() async throws -> RabbitMQDelivery? {
            try await next(isolation: #isolation)
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> RabbitMQDelivery? {
            try await state.next(isolation: actor)
        }

        /// For this package's own modules: whether ``next()`` returns a delivery it already
        /// holds, without going back to the buffer, where it may wait. `rmq consume` writes
        /// its buffered output (and acknowledges) when this turns false: before waiting.
        package var hasDeliveryInHand: Bool { state.hasDeliveryInHand }
    }
}
