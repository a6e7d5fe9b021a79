import Tracing

extension RabbitMQConnection {
    /// The tracer this connection records spans with and injects trace context through:
    /// ``RabbitMQConfiguration/tracer``, or the tracer bootstrapped with
    /// `InstrumentationSystem` when the connection opened; nil when there was neither
    /// (a `NoOpTracer` counts as none), and then nothing is recorded or injected.
    public var tracer: (any Tracer)? { tracing?.tracer }

    /// Runs `operation` for a received message inside a consumer span (`process <queue>`)
    /// whose parent is the trace context the publisher put in the message's headers, so the
    /// handling joins the publisher's trace; the span is the current one while `operation`
    /// runs (what it publishes continues the trace), records an error it throws, and ends
    /// when it returns. Without a tracer it only runs `operation`.
    ///
    /// Parented rather than linked: one message, one handler, so the handling belongs to the
    /// trace of the request that caused it, which is what a trace view should show.
    ///
    /// ```swift
    /// for try await delivery in consumer {
    ///     try await connection.withProcessSpan(for: delivery, queue: "orders") {
    ///         try await handle(delivery)
    ///         try delivery.ack()
    ///     }
    /// }
    /// ```
    ///
    /// - Parameters:
    ///   - delivery: The message being handled.
    ///   - queue: The queue it came from, for `messaging.destination.name` and the span's name.
    ///   - operation: The handling.
    public func withProcessSpan<T>(
        for delivery: RabbitMQDelivery, queue: String? = nil, _ operation: () async throws -> T
    ) async throws -> T {
        try await tracingProcess(of: delivery, queue: queue) { _ in try await operation() }
    }

    /// ``withProcessSpan(for:queue:_:)`` for this package's patterns, which record a
    /// handler's error on the span (nil without a tracer) themselves when they catch it.
    package func tracingProcess<T>(
        of delivery: RabbitMQDelivery, queue: String?, _ operation: ((any Span)?) async throws -> T
    ) async throws -> T {
        guard let tracing else { return try await operation(nil) }
        let parent = delivery.extractServiceContext(using: tracing.tracer, into: ServiceContext.current ?? .topLevel)
        let span = tracing.startSpan("process \(queue ?? delivery.routingKey)", context: parent, kind: .consumer)
        let properties = delivery.properties
        span.updateAttributes { attributes in
            attributes[MessagingAttributes.operationType] = "process"
            attributes[MessagingAttributes.operationName] = "process"
            attributes[MessagingAttributes.destinationName] = MessagingAttributes.destination(
                exchange: delivery.exchange, routingKey: delivery.routingKey, queue: queue)
            if !delivery.routingKey.isEmpty { attributes[MessagingAttributes.routingKey] = delivery.routingKey }
            if let id = properties.messageID { attributes[MessagingAttributes.messageID] = id }
            if let id = properties.correlationID { attributes[MessagingAttributes.conversationID] = id }
            attributes[MessagingAttributes.deliveryTag] = Int64(bitPattern: delivery.deliveryTag)
            attributes[MessagingAttributes.bodySize] = delivery.body.count
        }
        return try await tracing.run(in: span, operation)
    }

    /// A client span (`call <routing key>`) around an RPC call, for the patterns' RPC
    /// client: the request's publish is its child, so the server's handling and its reply
    /// belong to the caller's trace. Without a tracer it only runs `operation`.
    package func tracingCall<T>(
        exchange: String, routingKey: String, _ operation: () async throws -> T
    ) async throws -> T {
        guard let tracing else { return try await operation() }
        let span = tracing.startSpan("call \(routingKey)", context: ServiceContext.current ?? .topLevel, kind: .client)
        span.updateAttributes { attributes in
            MessagingAttributes.recordSend("call", exchange: exchange, routingKey: routingKey, into: &attributes)
        }
        return try await tracing.run(in: span) { _ in try await operation() }
    }
}
