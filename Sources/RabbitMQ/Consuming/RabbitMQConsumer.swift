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
/// come back with `redelivered` set. Ending the iteration (or cancelling the iterating task)
/// cancels the consumer; deliveries that arrive after that are requeued.
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
    let stream: AsyncThrowingStream<RabbitMQDelivery, any Error>

    /// Cancels the consumer (`basic.cancel`) and waits for the broker to confirm it; the
    /// sequence then ends after the deliveries already received.
    public func cancel() async throws {
        guard channel.isOpen else { return }
        _ = try await withCheckedThrowingContinuation { continuation in
            do {
                try channel.shared.core.submit(
                    .cancelConsumer(channel.shared, consumerTag: consumerTag, continuation))
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator())
    }

    /// Iterates the deliveries.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<RabbitMQDelivery, any Error>.AsyncIterator

        public mutating func next() async throws -> RabbitMQDelivery? {
            try await base.next()
        }
    }
}
