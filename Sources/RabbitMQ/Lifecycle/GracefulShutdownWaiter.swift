import ServiceLifecycle

/// How a wait for the end of a service ended.
package enum ServiceStop: Sendable, Equatable {
    /// The service group (or a test trigger) asked the service to shut down gracefully:
    /// finish what is in hand, take nothing new.
    case gracefulShutdown
    /// The task was cancelled: stop now.
    case cancelled
}

/// Suspends until the current task is asked to shut down gracefully or is cancelled,
/// whichever comes first; outside a `ServiceGroup` only cancellation ends it.
///
/// Our services run this in a child task next to their work and, on graceful shutdown, stop
/// taking new work (a `basic.cancel`, for a consumer) while the work in hand goes on. Unlike
/// ServiceLifecycle's `gracefulShutdown()`, it starts no unstructured task to wake the waiter:
/// the handler resumes the continuation itself, under a lock of ours.
package func gracefulShutdownOrCancellation() async -> ServiceStop {
    let event = OneShotEvent()
    await withTaskCancellationOrGracefulShutdownHandler {
        await event.wait()
    } onCancelOrGracefulShutdown: {
        event.fire()
    }
    return Task.isCancelled ? .cancelled : .gracefulShutdown
}

/// An event that happens once; ``wait()`` returns as soon as it has happened.
///
/// `package`: the patterns module waits on it too (an RPC client draining its calls).
package final class OneShotEvent: Sendable {
    private enum State {
        case pending(CheckedContinuation<Void, Never>?)
        case fired
    }

    private let state = LockedValue(State.pending(nil))

    package init() {}

    /// Whether the event has happened.
    package var hasFired: Bool {
        state.withLock { if case .fired = $0 { true } else { false } }
    }

    /// Makes it happen (again: nothing) and wakes the waiter. Never blocks; safe to call from
    /// ServiceLifecycle's handlers, which run under its lock.
    package func fire() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard case .pending(let waiter) = state else { return nil }
            state = .fired
            return waiter
        }
        waiter?.resume()
    }

    /// Waits for the event; one waiter at a time. Does not end on cancellation by itself:
    /// callers that must, fire it from a cancellation handler.
    package func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { state in
                guard case .pending(let previous) = state else { return true }
                precondition(previous == nil, "OneShotEvent: a second waiter")
                state = .pending(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}
