import RabbitMQPatterns

/// What a retry handler saw: each attempt's number and when it arrived and failed.
final class AttemptRecorder: Sendable {
    struct Attempt: Sendable {
        var id: String
        var number: Int
        var at: ContinuousClock.Instant
        var lastError: String?
    }

    private let attempts = Recorded<Attempt>()
    private let events: AsyncStream<Attempt>.Continuation
    let stream: AsyncStream<Attempt>

    init() { (stream, events) = AsyncStream.makeStream(of: Attempt.self) }

    func record(_ attempt: RabbitMQRetryAttempt<Job>) {
        let entry = Attempt(id: attempt.data.id, number: attempt.attempt, at: .now, lastError: attempt.lastError)
        attempts.append(entry)
        events.yield(entry)
    }

    var all: [Attempt] { attempts.all }
}
