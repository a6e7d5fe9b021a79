import ServiceLifecycle

/// A consumer of a ``RabbitMQRetryQueue`` as a `Service`: its `run()` is
/// ``RabbitMQRetryQueue/run(_:handler:)`` with the handler given here.
///
/// On graceful shutdown it stops consuming, lets the handlers in flight finish and settles
/// their messages (acknowledged, or republished to a delay queue); messages not yet handed to
/// a handler stay in the work queue.
///
/// ```swift
/// let emails = try await RabbitMQRetryQueue.declare("emails", on: connection)
/// let worker = RabbitMQRetryQueueService(queue: emails, payload: Email.self) { attempt in
///     try await mailer.send(attempt.data)
/// }
/// ```
public struct RabbitMQRetryQueueService<Payload: Codable & Sendable>: Service {
    /// The retry queue consumed.
    public let queue: RabbitMQRetryQueue
    private let handler: @Sendable (RabbitMQRetryAttempt<Payload>) async throws -> Void

    /// A worker that runs `handler` for each message of `queue` (see ``RabbitMQRetryQueue`` for
    /// what follows when it returns or throws).
    public init(
        queue: RabbitMQRetryQueue, payload: Payload.Type = Payload.self,
        handler: @escaping @Sendable (RabbitMQRetryAttempt<Payload>) async throws -> Void
    ) {
        self.queue = queue
        self.handler = handler
    }

    /// Consumes the work queue until graceful shutdown, cancellation, or a failure of its
    /// channel; see ``RabbitMQRetryQueue/run(_:handler:)``.
    public func run() async throws {
        try await queue.run(Payload.self, handler: handler)
    }
}
