import Tracing

extension RabbitMQChannel {
    /// The publish path when the connection has a tracer: a producer span
    /// (`publish <exchange>`) whose context goes into the message's headers, around `send`,
    /// which is the untraced publish given the headers with the context in them.
    ///
    /// Headers that already carry a W3C trace context (the caller set `traceparent` itself,
    /// or a retry republishes a message with its original headers) are kept as they are: the
    /// span is then a child of that context instead of the current one, so the message and
    /// the span stay in the trace the caller chose.
    ///
    /// The span ends when the message is handed to the connection (queued for its I/O
    /// thread), also for ``publishWithConfirm(_:exchange:routingKey:properties:mandatory:)``:
    /// the confirmation comes later, on a handle the caller may never await, and a span left
    /// open until then would measure the broker's confirm latency rather than the publish
    /// (and would never end for a confirmation nobody awaits). A failure to hand it over
    /// (closed channel, timeout) is recorded on the span with `error.type`.
    @inline(never)
    func tracedPublish(
        _ tracing: ConnectionTracing, exchange: String, routingKey: String, properties: RabbitMQProperties,
        bodySize: Int, send: (RabbitMQProperties) async throws -> Void
    ) async throws {
        let tracer = tracing.tracer
        var parent = ServiceContext.current ?? .topLevel
        var carriesContext = false
        // A W3C `traceparent` is what says the headers carry a trace: other context alone (a
        // `baggage` header) must not stop the span's own context from being injected.
        if let headers = properties.headers, headers["traceparent"] != nil {
            var carried = ServiceContext.topLevel
            tracer.extract(headers, into: &carried, using: RabbitMQHeadersExtractor())
            if !carried.isEmpty {
                parent = carried
                carriesContext = true
            }
        }
        let span = tracing.startSpan(
            "publish \(MessagingAttributes.exchangeName(exchange))", context: parent, kind: .producer)
        span.updateAttributes { attributes in
            MessagingAttributes.recordSend("publish", exchange: exchange, routingKey: routingKey, into: &attributes)
            if let id = properties.messageID { attributes[MessagingAttributes.messageID] = id }
            if let id = properties.correlationID { attributes[MessagingAttributes.conversationID] = id }
            attributes[MessagingAttributes.bodySize] = bodySize
        }
        var properties = properties
        if !carriesContext {
            var headers = properties.headers ?? [:]
            tracer.inject(span.context, into: &headers, using: RabbitMQHeadersInjector())
            properties.headers = headers
        }
        defer { span.end() }
        do {
            try await send(properties)
        } catch {
            span.recordFailure(error)
            throw error
        }
    }
}
