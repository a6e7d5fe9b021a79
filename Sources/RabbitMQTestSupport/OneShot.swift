import RabbitMQ

/// An event that happens once: tasks wait for it, and it can be fired any number of times
/// (the first counts). For a test to hold a handler until it has seen what it waits for.
public final class OneShot: Sendable {
    private struct State {
        var fired = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = LockedValue(State())

    public init() {}

    /// Fires the event: every waiter goes on, and later waits return at once.
    public func fire() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.fired else { return [] }
            state.fired = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Whether it has fired.
    public var hasFired: Bool { state.withLock { $0.fired } }

    /// Waits until the event fires (not cancellable: fire it to end a test).
    public func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.fired { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}
