import Instrumentation

/// Writes a trace context into message headers: what a tracer's `inject(_:into:using:)`
/// calls for each value it propagates (W3C `traceparent` and `tracestate` for swift-otel).
///
/// Publishing uses it by itself when the connection has a tracer; use it directly to put a
/// context into headers you build yourself.
///
/// ```swift
/// var headers: RabbitMQFieldTable = [:]
/// InstrumentationSystem.instrument.inject(context, into: &headers, using: RabbitMQHeadersInjector())
/// ```
public struct RabbitMQHeadersInjector: Injector {
    /// Creates an injector.
    public init() {}

    /// Sets `key` to `value` as a long string (`S`), the type every other client reads.
    public func inject(_ value: String, forKey key: String, into carrier: inout RabbitMQFieldTable) {
        carrier[key] = .string(value)
    }
}

/// Reads a trace context from message headers: what a tracer's `extract(_:into:using:)`
/// calls for each key it looks for. See ``RabbitMQDelivery/extractServiceContext(using:into:)``.
public struct RabbitMQHeadersExtractor: Extractor {
    /// Creates an extractor.
    public init() {}

    /// The value of `key` as text: a long string, or a byte array that is valid UTF-8 (some
    /// clients write strings as `x`); nil for anything else.
    public func extract(key: String, from carrier: RabbitMQFieldTable) -> String? {
        switch carrier[key] {
        case .string(let value): value
        case .bytes(let bytes): String(validating: bytes, as: UTF8.self)
        default: nil
        }
    }
}
