import Instrumentation

extension RabbitMQDelivery {
    /// The trace context the publisher put in the message's headers (W3C `traceparent` and
    /// `tracestate` with swift-otel), added to `context`: the parent for the span of whatever
    /// handles the message, so a plain consumer can continue the publisher's trace.
    ///
    /// ```swift
    /// let context = delivery.extractServiceContext(using: InstrumentationSystem.instrument)
    /// try await withSpan("handle order", context: context, ofKind: .consumer) { _ in
    ///     try await handle(delivery)
    /// }
    /// ```
    ///
    /// ``RabbitMQConnection/withProcessSpan(for:queue:_:)`` does this and records the span
    /// with the messaging attributes.
    ///
    /// - Parameters:
    ///   - instrument: The instrument (tracer) that knows the header format, usually
    ///     ``RabbitMQConnection/tracer`` or `InstrumentationSystem.instrument`.
    ///   - context: What to add the extracted context to. Default: `.topLevel`.
    /// - Returns: `context`, unchanged when the headers carry no trace context.
    public func extractServiceContext(
        using instrument: any Instrument, into context: ServiceContext = .topLevel
    ) -> ServiceContext {
        var context = context
        if let headers = properties.headers, !headers.isEmpty {
            instrument.extract(headers, into: &context, using: RabbitMQHeadersExtractor())
        }
        return context
    }
}
