import RabbitMQ

/// The state an ``RabbitMQRPCClient`` shares between its callers and its reply reader: whether
/// the reply consumer is up, and one slot per call in flight, keyed by correlation id.
///
/// A slot is registered before the request is published, so a reply can never arrive for an
/// id we do not know yet; a reply whose slot is gone (its call timed out or was cancelled) is
/// counted and dropped, never handed to another caller.
final class RPCCallRegistry: Sendable {
    /// The channel requests go out on and the reply-to address answers come back to.
    struct Link: Sendable {
        var channel: RabbitMQChannel
        var replyTo: String
    }

    private enum Phase {
        case idle, starting
        case running(Link)
        case finished(RabbitMQPatternsError)
    }

    private enum Slot {
        case waiting(CheckedContinuation<RabbitMQDelivery, any Error>?)
        case done(Result<RabbitMQDelivery, any Error>)
    }

    private struct State {
        var phase = Phase.idle
        var readyWaiters: [Int: CheckedContinuation<Link, any Error>] = [:]
        var nextWaiter = 0
        var calls: [String: Slot] = [:]
        var discardedReplies = 0
    }

    private let state = LockedState(State())

    var discardedReplies: Int { state.withLock { $0.discardedReplies } }

    var inFlight: Int { state.withLock { $0.calls.count } }

    // MARK: Lifecycle

    func beginStarting() throws(RabbitMQPatternsError) {
        try state.withLock { (state) throws(RabbitMQPatternsError) in
            guard case .idle = state.phase else {
                throw RabbitMQPatternsError(code: .closed, message: "run() was already called on this RPC client")
            }
            state.phase = .starting
        }
    }

    func setRunning(_ link: Link) {
        let waiters = state.withLock { state in
            state.phase = .running(link)
            defer { state.readyWaiters = [:] }
            return state.readyWaiters.values
        }
        for waiter in waiters { waiter.resume(returning: link) }
    }

    /// Fails every waiting caller with `error`; later calls fail with it at once.
    func finish(_ error: RabbitMQPatternsError) {
        let (waiters, calls) = state.withLock { state in
            if case .finished = state.phase { return ([CheckedContinuation<Link, any Error>](), [CheckedContinuation<RabbitMQDelivery, any Error>]()) }
            state.phase = .finished(error)
            let waiters = Array(state.readyWaiters.values)
            state.readyWaiters = [:]
            var continuations: [CheckedContinuation<RabbitMQDelivery, any Error>] = []
            for (id, slot) in state.calls {
                if case .waiting(let continuation?) = slot {
                    continuations.append(continuation)
                    state.calls[id] = nil
                } else {
                    state.calls[id] = .done(.failure(error))
                }
            }
            return (waiters, continuations)
        }
        for waiter in waiters { waiter.resume(throwing: error) }
        for call in calls { call.resume(throwing: error) }
    }

    /// Waits until the reply consumer is up (or the client has stopped).
    func ready() async throws -> Link {
        let immediate: Result<Link, RabbitMQPatternsError>? = state.withLock { state in
            switch state.phase {
            case .running(let link): .success(link)
            case .finished(let error): .failure(error)
            case .idle, .starting: nil
            }
        }
        if let immediate { return try immediate.get() }
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let result: Result<Link, any Error>? = state.withLock { state in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    switch state.phase {
                    case .running(let link): return .success(link)
                    case .finished(let error): return .failure(error)
                    case .idle, .starting:
                        state.readyWaiters[id] = continuation
                        return nil
                    }
                }
                if let result { continuation.resume(with: result) }
            }
        } onCancel: {
            state.withLock { $0.readyWaiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    // MARK: Calls

    func register(_ id: String) {
        state.withLock { $0.calls[id] = .waiting(nil) }
    }

    func remove(_ id: String) {
        let continuation: CheckedContinuation<RabbitMQDelivery, any Error>? = state.withLock { state in
            guard case .waiting(let continuation) = state.calls.removeValue(forKey: id) else { return nil }
            return continuation
        }
        continuation?.resume(throwing: CancellationError())
    }

    /// Hands a reply (or a failure) to the call waiting for `id`. A reply without a waiting
    /// call is counted as discarded.
    func resolve(_ id: String, with result: Result<RabbitMQDelivery, any Error>, isReply: Bool) {
        let continuation: CheckedContinuation<RabbitMQDelivery, any Error>? = state.withLock { state in
            switch state.calls[id] {
            case .waiting(let continuation?):
                state.calls[id] = nil
                return continuation
            case .waiting(nil):
                state.calls[id] = .done(result)
            case .done, nil:
                if isReply { state.discardedReplies += 1 }
            }
            return nil
        }
        continuation?.resume(with: result)
    }

    /// Counts a reply that carries no correlation id at all.
    func discardReply() {
        state.withLock { $0.discardedReplies += 1 }
    }

    /// Waits for the reply to `id`; cancelling the task removes the slot, so that a later
    /// reply is discarded.
    func wait(_ id: String) async throws -> RabbitMQDelivery {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let result: Result<RabbitMQDelivery, any Error>? = state.withLock { state in
                    switch state.calls[id] {
                    case .waiting(nil):
                        state.calls[id] = .waiting(continuation)
                        return nil
                    case .done(let result):
                        state.calls[id] = nil
                        return result
                    case .waiting(.some), nil:
                        // Removed by cancellation before we got here.
                        return .failure(CancellationError())
                    }
                }
                if let result { continuation.resume(with: result) }
            }
        } onCancel: {
            remove(id)
        }
    }
}
