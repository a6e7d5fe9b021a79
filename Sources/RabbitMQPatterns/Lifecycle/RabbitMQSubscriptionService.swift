import RabbitMQ
import ServiceLifecycle

/// A ``RabbitMQSubscription`` with a handler, as a `Service`: runs the handler for each
/// message and settles it.
///
/// - The handler returns: the message is acknowledged.
/// - The handler throws: the message is rejected without requeue, so it goes to the queue's
///   dead-letter exchange (``RabbitMQSubscription/deadLetterQueue`` by default, on every
///   exchange type) instead of coming back at once.
///
/// Handlers run concurrently, at most the subscription's prefetch count at a time (the broker
/// sends no more unacknowledged messages); subscribe with a prefetch of 1 to handle one at a
/// time, in order. The service owns the subscription: when `run()` ends, the subscription's
/// channel is closed.
///
/// On graceful shutdown it cancels the consumer (`basic.cancel`), lets the handlers in flight
/// finish, settles their messages, and returns; undelivered messages stay in the queue.
/// Cancelling the task instead abandons the handlers; their messages are requeued.
///
/// ```swift
/// let audit = try await events.subscribe(Order.self, queue: "audit", patterns: ["orders.#"])
/// let auditor = RabbitMQSubscriptionService(subscription: audit) { message in
///     log.append(message.data)
/// }
/// ```
public struct RabbitMQSubscriptionService<Payload: Codable & Sendable>: Service {
    /// The subscription consumed.
    public let subscription: RabbitMQSubscription<Payload>
    private let handler: @Sendable (RabbitMQEnvelopeMessage<Payload>) async throws -> Void

    /// A service that runs `handler` for each message of `subscription`.
    public init(
        subscription: RabbitMQSubscription<Payload>,
        handler: @escaping @Sendable (RabbitMQEnvelopeMessage<Payload>) async throws -> Void
    ) {
        self.subscription = subscription
        self.handler = handler
    }

    /// Handles messages until graceful shutdown, cancellation, or a failure of the
    /// subscription's channel or consumer, then closes the subscription's channel.
    ///
    /// - Throws: `RabbitMQError` when the broker cancels the consumer (its queue was
    ///   deleted) or the channel fails.
    public func run() async throws {
        do {
            try await subscription.consumer.stoppingOnGracefulShutdown {
                try await withThrowingDiscardingTaskGroup { group in
                    for try await message in subscription {
                        if group.isCancelled { break }
                        group.addTask { try await handle(message) }
                    }
                }
            }
        } catch {
            // Closing the channel cancels the consumer and requeues what is unacknowledged.
            try? await subscription.channel.close()
            if error is CancellationError { return }
            throw error
        }
        // The consumer is cancelled already (graceful shutdown) or gone with its queue; the
        // channel is all that is left.
        try? await subscription.channel.close()
    }

    private func handle(_ message: RabbitMQEnvelopeMessage<Payload>) async throws {
        do {
            // In a process span continuing the publisher's trace, when a tracer is set.
            try await subscription.withProcessSpan(for: message) { try await handler(message) }
        } catch {
            // Shutting down by cancellation: leave it unacknowledged; the channel's close
            // requeues it.
            if Task.isCancelled { return }
            try message.reject(requeue: false)
            return
        }
        try message.ack()
    }
}
