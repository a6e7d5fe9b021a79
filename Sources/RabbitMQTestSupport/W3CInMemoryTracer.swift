import InMemoryTracing
import Instrumentation
import Tracing

/// An `InMemoryTracer` that propagates its context as W3C Trace Context (`traceparent`,
/// `tracestate`), as swift-otel does, instead of InMemoryTracer's own header names: so tests
/// can check the headers other clients (pika, OpenTelemetry's Python SDK) read and write.
/// Trace and span ids are random lowercase hex of W3C's lengths (32 and 16 digits).
public struct W3CInMemoryTracer: Tracer {
    /// The tracer that records: ask it for `finishedSpans`.
    public let recorder: InMemoryTracer

    /// A tracer with an empty record.
    public init() {
        recorder = InMemoryTracer(
            idGenerator: InMemoryTracer.IDGenerator(
                nextTraceID: { Self.hex(digits: 32) }, nextSpanID: { Self.hex(digits: 16) }))
    }

    /// The spans ended so far.
    public var finishedSpans: [FinishedInMemorySpan] { recorder.finishedSpans }

    static func hex(digits: Int) -> String {
        var text = ""
        while text.count < digits { text += String(UInt64.random(in: 1...UInt64.max), radix: 16) }
        return String(text.prefix(digits))
    }

    public func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> InMemorySpan {
        recorder.startSpan(
            operationName, context: context(), ofKind: kind, at: instant(), function: function, file: fileID, line: line)
    }

    public func forceFlush() {}

    public func inject<Carrier, Inject: Injector>(
        _ context: ServiceContext, into carrier: inout Carrier, using injector: Inject
    ) where Carrier == Inject.Carrier {
        guard let span = context.inMemorySpanContext else { return }
        injector.inject("00-\(span.traceID)-\(span.spanID)-01", forKey: "traceparent", into: &carrier)
    }

    public func extract<Carrier, Extract: Extractor>(
        _ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract
    ) where Carrier == Extract.Carrier {
        // W3C baggage travels on its own, with or without a trace (as swift-otel's propagator
        // extracts it).
        if let baggage = extractor.extract(key: "baggage", from: carrier) { context[W3CBaggageKey.self] = baggage }
        guard let traceparent = extractor.extract(key: "traceparent", from: carrier) else { return }
        let parts = traceparent.split(separator: "-")
        guard parts.count == 4, parts[1].count == 32, parts[2].count == 16 else { return }
        context.inMemorySpanContext = InMemorySpanContext(
            traceID: String(parts[1]), spanID: String(parts[2]), parentSpanID: nil)
    }
}

/// The raw W3C `baggage` header a ``W3CInMemoryTracer`` extracted.
public enum W3CBaggageKey: ServiceContextKey {
    public typealias Value = String
}
