import Tracing

/// A connection's tracer, resolved once when it opens: ``RabbitMQConfiguration/tracer``, or
/// the one bootstrapped with `InstrumentationSystem`. A connection without one has no
/// `ConnectionTracing` at all, so the publish path pays one nil check for tracing and reads
/// no task-local, takes no lock and allocates nothing for it.
final class ConnectionTracing: Sendable {
    let tracer: any Tracer
    /// For `server.address` and `server.port`: the endpoint changes when recovery moves to
    /// another broker of a cluster, so it is read for each span.
    private let core: ConnectionCore

    private init(tracer: any Tracer, core: ConnectionCore) {
        self.tracer = tracer
        self.core = core
    }

    /// Nil when there is no tracer to record with: none configured and none bootstrapped
    /// (`InstrumentationSystem.tracer` is then a `NoOpTracer`, which counts as none).
    static func resolve(_ configured: (any Tracer)?, core: ConnectionCore) -> ConnectionTracing? {
        let tracer = configured ?? InstrumentationSystem.tracer
        if tracer is NoOpTracer { return nil }
        return ConnectionTracing(tracer: tracer, core: core)
    }

    /// Starts a span with the attributes every span of this package has.
    func startSpan(_ name: String, context: ServiceContext, kind: SpanKind) -> any Span {
        let span = tracer.startSpan(name, context: context, ofKind: kind)
        let endpoint = core.negotiated.endpoint
        span.updateAttributes { attributes in
            attributes[MessagingAttributes.system] = MessagingAttributes.rabbitMQ
            if let endpoint {
                attributes[MessagingAttributes.serverAddress] = endpoint.host
                attributes[MessagingAttributes.serverPort] = endpoint.port
            }
        }
        return span
    }

    /// Runs `operation` in `span` (the span's context is the current one), records its
    /// error, and ends the span.
    func run<T>(in span: any Span, _ operation: ((any Span)?) async throws -> T) async throws -> T {
        defer { span.end() }
        do {
            return try await ServiceContext.withValue(span.context) { try await operation(span) }
        } catch {
            span.recordFailure(error)
            throw error
        }
    }
}

/// An error that names its class for `error.type` (low cardinality: a code, not a message).
package protocol SpanErrorType: Error {
    var spanErrorType: String { get }
}

extension RabbitMQError: SpanErrorType {
    package var spanErrorType: String { code.description }
}

extension Span {
    /// Records a failure the OpenTelemetry way: the error as an event, status error, and
    /// `error.type` (the code of this package's errors, otherwise the error's type name).
    package func recordFailure(_ error: any Error) {
        recordError(error)
        setStatus(SpanStatus(code: .error))
        attributes[MessagingAttributes.errorType] =
            (error as? any SpanErrorType)?.spanErrorType ?? String(reflecting: Swift.type(of: error))
    }
}
