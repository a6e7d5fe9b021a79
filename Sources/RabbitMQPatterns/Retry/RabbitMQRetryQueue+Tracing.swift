import RabbitMQ
import Tracing

extension RabbitMQRetryQueue {
    /// `handler`, recording what it throws on the attempt's process span (the error is
    /// caught and turned into a retry further on, so the span would not see it otherwise).
    /// The republish of a failed attempt keeps the message's headers, trace context
    /// included, so every attempt of a message belongs to the trace it was first published in.
    static func recordingFailures<Payload>(
        of handler: @escaping @Sendable (RabbitMQRetryAttempt<Payload>) async throws -> Void, on span: (any Span)?
    ) -> @Sendable (RabbitMQRetryAttempt<Payload>) async throws -> Void {
        guard let span else { return handler }
        return { attempt in
            do {
                try await handler(attempt)
            } catch {
                span.recordFailure(error)
                throw error
            }
        }
    }
}
