import RabbitMQ
import Tracing

extension RabbitMQSubscription {
    /// Runs `operation` for `message` inside a consumer span (`process <queue>`) that
    /// continues the publisher's trace, as ``RabbitMQRPCServer`` and ``RabbitMQRetryQueue``
    /// do around their handlers: a subscription is a sequence you iterate, so wrap the
    /// handling of each message yourself. Without a tracer on the connection it only runs
    /// `operation`. See `RabbitMQConnection.withProcessSpan(for:queue:_:)`.
    ///
    /// ```swift
    /// for try await message in subscription {
    ///     try await subscription.withProcessSpan(for: message) {
    ///         try await handle(message.data)
    ///         try message.ack()
    ///     }
    /// }
    /// ```
    public func withProcessSpan<T>(
        for message: RabbitMQEnvelopeMessage<Payload>, _ operation: () async throws -> T
    ) async throws -> T {
        try await channel.connection.withProcessSpan(for: message.delivery, queue: queue, operation)
    }
}

extension RabbitMQEnvelopeMessage {
    /// The trace context its publisher put in the headers, added to `context`, for spans
    /// of your own; see `RabbitMQDelivery.extractServiceContext(using:into:)`.
    public func extractServiceContext(
        using instrument: any Instrument, into context: ServiceContext = .topLevel
    ) -> ServiceContext {
        delivery.extractServiceContext(using: instrument, into: context)
    }
}
