import Synchronization


/// The one-shot result of a publish in confirm mode: resolved by the I/O thread, awaited by
/// any task. Safe to await from several tasks; each sees the same outcome.
final class ConfirmTicket: Sendable {
    private enum State {
        case pending
        /// One waiter (the usual case) needs no array.
        case awaited(CheckedContinuation<RabbitMQPublishOutcome, any Error>)
        case awaitedByMany([CheckedContinuation<RabbitMQPublishOutcome, any Error>])
        case done(Result<RabbitMQPublishOutcome, RabbitMQError>)
    }

    private let state = LockedValue(State.pending)
    /// Set when recovery published the message again on a new connection.
    let republished = Atomic<Bool>(false)

    func resolve(_ result: Result<RabbitMQPublishOutcome, RabbitMQError>) {
        let previous: State = state.withLock { state in
            let previous = state
            if case .done = state { return previous }
            state = .done(result)
            return previous
        }
        switch previous {
        case .awaited(let waiter): waiter.resume(with: result.mapError { $0 })
        case .awaitedByMany(let waiters): for waiter in waiters { waiter.resume(with: result.mapError { $0 }) }
        case .pending, .done: break
        }
    }

    var result: Result<RabbitMQPublishOutcome, RabbitMQError>? {
        state.withLock { state in
            if case .done(let result) = state { return result }
            return nil
        }
    }

    func wait() async throws -> RabbitMQPublishOutcome {
        if let result { return try result.get() }
        return try await withCheckedThrowingContinuation { continuation in
            let done: Result<RabbitMQPublishOutcome, RabbitMQError>? = state.withLock { state in
                switch state {
                case .pending:
                    state = .awaited(continuation)
                    return nil
                case .awaited(let first):
                    state = .awaitedByMany([first, continuation])
                    return nil
                case .awaitedByMany(let waiters):
                    state = .awaitedByMany(waiters + [continuation])
                    return nil
                case .done(let result):
                    return result
                }
            }
            if let done { continuation.resume(with: done.mapError { $0 }) }
        }
    }
}
