import Synchronization


/// The one-shot result of a publish in confirm mode: resolved by the I/O thread, awaited by
/// any task. Safe to await from several tasks; each sees the same outcome.
final class ConfirmTicket: Sendable {
    private enum State {
        case pending([CheckedContinuation<RabbitMQPublishOutcome, any Error>])
        case done(Result<RabbitMQPublishOutcome, RabbitMQError>)
    }

    private let state = LockedValue(State.pending([]))
    /// Set when recovery published the message again on a new connection.
    let republished = Atomic<Bool>(false)

    func resolve(_ result: Result<RabbitMQPublishOutcome, RabbitMQError>) {
        let waiters: [CheckedContinuation<RabbitMQPublishOutcome, any Error>] = state.withLock { state in
            guard case .pending(let waiters) = state else { return [] }
            state = .done(result)
            return waiters
        }
        for waiter in waiters { waiter.resume(with: result.mapError { $0 }) }
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
                case .pending(var waiters):
                    waiters.append(continuation)
                    state = .pending(waiters)
                    return nil
                case .done(let result):
                    return result
                }
            }
            if let done { continuation.resume(with: done.mapError { $0 }) }
        }
    }
}
