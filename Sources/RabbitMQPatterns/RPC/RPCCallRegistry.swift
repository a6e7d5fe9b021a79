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
        /// Graceful shutdown: calls in flight go on, new calls fail with `closed`.
        case draining
        case finished(RabbitMQPatternsError)
    }

    private enum Slot {
        case waiting(CheckedContinuation<RabbitMQDelivery, any Error>?, Pending)
        case done(Result<RabbitMQDelivery, any Error>)

        var isWaiting: Bool { if case .waiting = self { true } else { false } }
    }

    /// What the registry knows of a call still waiting: when it gives up, and where its
    /// request went (so that a channel the broker closed fails the calls it took with it).
    struct Pending: Sendable {
        var deadline: Deadline?
        /// The channel the request is published on (nil in tests of the registry alone).
        var channel: ObjectIdentifier?
    }

    /// When a call gives up, and what it then reports.
    struct Deadline: Sendable {
        var instant: ContinuousClock.Instant
        var routingKey: String
        var timeout: Duration
    }

    private struct State {
        var phase = Phase.idle
        var readyWaiters: [Int: CheckedContinuation<Link, any Error>] = [:]
        var nextWaiter = 0
        var calls: [String: Slot] = [:]
        var discardedReplies = 0
        /// When the timer task wakes next (nil: it waits for a deadline to appear).
        var timerTarget: ContinuousClock.Instant?
        /// The timer task, parked until an earlier deadline appears.
        var timerKick: CheckedContinuation<Void, Never>?
        /// An earlier deadline appeared while the timer was between its scan and parking.
        var kickPending = false
        /// The client's run(), waiting (while draining) for the last call in flight to end.
        var drainWaiter: CheckedContinuation<Void, Never>?

        /// The drain waiter, taken, once no call waits for its reply any more.
        mutating func takeDrainWaiterIfDrained() -> CheckedContinuation<Void, Never>? {
            guard drainWaiter != nil, !calls.values.contains(where: \.isWaiting) else { return nil }
            return drainWaiter.take()
        }
    }

    static let drainingError = RabbitMQPatternsError(
        code: .closed, message: "the RPC client is shutting down: it takes no new calls")

    private let state = LockedValue(State())

    var discardedReplies: Int { state.withLock { $0.discardedReplies } }

    /// Whether a drained() waits (tests watch it to see that a drain parked, not ended).
    var isDrainAwaited: Bool { state.withLock { $0.drainWaiter != nil } }

    /// Calls still waiting for their reply (not those whose outcome awaits collection).
    var inFlight: Int {
        state.withLock { state in
            state.calls.values.count(where: \.isWaiting)
        }
    }

    // MARK: Lifecycle

    func beginStarting() throws(RabbitMQPatternsError) {
        try state.withLock { (state) throws(RabbitMQPatternsError) in
            guard case .idle = state.phase else {
                throw RabbitMQPatternsError(code: .closed, message: "run() was already called on this RPC client")
            }
            state.phase = .starting
        }
    }

    /// The reply consumer is up on `link`'s channel (at the start, or after the broker closed
    /// the last one): callers waiting for it go on. A client that began draining or finished
    /// meanwhile stays so.
    func setRunning(_ link: Link) {
        let waiters = state.withLock { state in
            switch state.phase {
            case .draining, .finished: return Dictionary<Int, CheckedContinuation<Link, any Error>>().values
            case .idle, .starting, .running: state.phase = .running(link)
            }
            defer { state.readyWaiters = [:] }
            return state.readyWaiters.values
        }
        for waiter in waiters { waiter.resume(returning: link) }
    }

    /// Fails every caller still waiting for its reply with `error`; later calls fail with it
    /// at once. An outcome already recorded for a caller that has not collected it yet is
    /// kept.
    func finish(_ error: RabbitMQPatternsError) {
        typealias Woken = (
            ready: [CheckedContinuation<Link, any Error>], calls: [CheckedContinuation<RabbitMQDelivery, any Error>],
            drain: CheckedContinuation<Void, Never>?
        )
        let (waiters, calls, drainWaiter): Woken = state.withLock { state in
            if case .finished = state.phase { return ([], [], nil) }
            state.phase = .finished(error)
            let waiters = Array(state.readyWaiters.values)
            state.readyWaiters = [:]
            var continuations: [CheckedContinuation<RabbitMQDelivery, any Error>] = []
            for (id, slot) in state.calls {
                switch slot {
                case .waiting(let continuation?, _):
                    continuations.append(continuation)
                    state.calls[id] = nil
                case .waiting(nil, _):
                    state.calls[id] = .done(.failure(error))
                case .done:
                    // A reply, return or timeout that came before its caller waited: the
                    // caller still gets it.
                    break
                }
            }
            return (waiters, continuations, state.drainWaiter.take())
        }
        for waiter in waiters { waiter.resume(throwing: error) }
        for call in calls { call.resume(throwing: error) }
        drainWaiter?.resume()
    }

    /// Graceful shutdown: later calls fail with `closed` at once (a call that saw the client
    /// running and registers meanwhile still counts as in flight), callers waiting for the
    /// client to start fail the same way, and calls in flight go on.
    func beginDraining() {
        let waiters: [CheckedContinuation<Link, any Error>] = state.withLock { state in
            guard case .running = state.phase else {
                if case .finished = state.phase { return [] }
                state.phase = .draining
                defer { state.readyWaiters = [:] }
                return Array(state.readyWaiters.values)
            }
            state.phase = .draining
            return []
        }
        for waiter in waiters { waiter.resume(throwing: Self.drainingError) }
    }

    /// Waits until no call waits for its reply (each has its reply, failed or timed out), or
    /// the client finished, or the task is cancelled. One drain at a time (the client's
    /// run()): a second would replace the first's continuation, which then never resumes.
    func drained() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow: Bool = state.withLock { state in
                    if Task.isCancelled { return true }
                    if case .finished = state.phase { return true }
                    if !state.calls.values.contains(where: \.isWaiting) { return true }
                    precondition(state.drainWaiter == nil, "drained() is already awaited")
                    state.drainWaiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.drainWaiter.take() }?.resume()
        }
    }

    /// Waits until the reply consumer is up (or the client has stopped).
    func ready() async throws -> Link {
        let immediate: Result<Link, RabbitMQPatternsError>? = state.withLock { state in
            switch state.phase {
            // A link whose channel closed is being replaced (see channelClosed): wait for the next.
            case .running(let link) where !link.channel.isOpen: nil
            case .running(let link): .success(link)
            case .finished(let error): .failure(error)
            case .draining: .failure(Self.drainingError)
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
                    case .running(let link) where link.channel.isOpen: return .success(link)
                    case .finished(let error): return .failure(error)
                    case .draining: return .failure(Self.drainingError)
                    case .idle, .starting, .running:
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

    /// Whether the client is running: the link to send on, without waiting.
    var runningLink: Link? {
        state.withLock { state in
            if case .running(let link) = state.phase, link.channel.isOpen { return link }
            return nil
        }
    }

    /// Adds the slot of a call; with a deadline, the timer task fails it at that instant.
    ///
    /// - Throws: The client's error when it has finished (it stopped after the caller saw it
    ///   running): nothing would answer the call, so its request must not be published.
    func register(
        _ id: String, deadline: Deadline? = nil, channel: ObjectIdentifier? = nil
    ) throws(RabbitMQPatternsError) {
        let kick: CheckedContinuation<Void, Never>? = try state.withLock { (state) throws(RabbitMQPatternsError) in
            if case .finished(let error) = state.phase { throw error }
            state.calls[id] = .waiting(nil, Pending(deadline: deadline, channel: channel))
            // The timer sleeps until an earlier instant, or is parked: wake it to look again.
            guard let deadline, state.timerTarget.map({ deadline.instant < $0 }) ?? true else { return nil }
            guard let kick = state.timerKick.take() else {
                state.kickPending = true
                return nil
            }
            return kick
        }
        kick?.resume()
    }

    // MARK: Timeouts

    /// Fails the calls whose deadline has passed (with `timeout`), until cancelled. One task
    /// for every call of the client: a call costs no task and no timer of its own.
    func runTimer() async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            var expired: [(CheckedContinuation<RabbitMQDelivery, any Error>?, Deadline)] = []
            var drainWaiter: CheckedContinuation<Void, Never>?
            let next: ContinuousClock.Instant? = state.withLock { state in
                state.kickPending = false  // this scan sees every deadline registered so far
                var next: ContinuousClock.Instant?
                for (id, slot) in state.calls {
                    guard case .waiting(let continuation, let pending) = slot, let deadline = pending.deadline else { continue }
                    if deadline.instant <= now {
                        if continuation != nil {
                            state.calls[id] = nil
                        } else {
                            // Its caller has not started waiting yet: it finds the error there.
                            state.calls[id] = .done(.failure(Self.timeoutError(deadline)))
                        }
                        expired.append((continuation, deadline))
                    } else if next.map({ deadline.instant < $0 }) ?? true {
                        next = deadline.instant
                    }
                }
                state.timerTarget = next
                drainWaiter = state.takeDrainWaiterIfDrained()
                return next
            }
            for (continuation, deadline) in expired { continuation?.resume(throwing: Self.timeoutError(deadline)) }
            drainWaiter?.resume()
            await withTaskGroup(of: Void.self) { group in
                if let next { group.addTask { try? await Task.sleep(until: next, clock: .continuous) } }
                group.addTask { await self.waitForKick() }
                await group.next()
                group.cancelAll()
            }
        }
    }

    private func waitForKick() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow: Bool = state.withLock { state in
                    if Task.isCancelled { return true }
                    if state.kickPending {
                        state.kickPending = false
                        return true
                    }
                    state.timerKick = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.timerKick.take() }?.resume()
        }
    }

    static func timeoutError(_ deadline: Deadline) -> RabbitMQPatternsError {
        RabbitMQPatternsError(
            code: .timeout,
            message: "no reply from '\(deadline.routingKey)' within \(RabbitMQRPCClient.describe(deadline.timeout))")
    }

    func remove(_ id: String) {
        let (continuation, drainWaiter) = state.withLock { state in
            guard case .waiting(let continuation, _) = state.calls.removeValue(forKey: id) else {
                return (CheckedContinuation<RabbitMQDelivery, any Error>?.none, CheckedContinuation<Void, Never>?.none)
            }
            return (continuation, state.takeDrainWaiterIfDrained())
        }
        continuation?.resume(throwing: CancellationError())
        drainWaiter?.resume()
    }

    /// Hands a reply (or a failure) to the call waiting for `id`. A reply without a waiting
    /// call is counted as discarded.
    func resolve(_ id: String, with result: Result<RabbitMQDelivery, any Error>, isReply: Bool) {
        var drainWaiter: CheckedContinuation<Void, Never>?
        let continuation: CheckedContinuation<RabbitMQDelivery, any Error>? = state.withLock { state in
            var continuation: CheckedContinuation<RabbitMQDelivery, any Error>?
            switch state.calls[id] {
            case .waiting(let waiting?, _):
                state.calls[id] = nil
                continuation = waiting
            case .waiting(nil, _):
                state.calls[id] = .done(result)
            case .done, nil:
                if isReply { state.discardedReplies += 1 }
            }
            drainWaiter = state.takeDrainWaiterIfDrained()
            return continuation
        }
        continuation?.resume(with: result)
        drainWaiter?.resume()
    }

    /// The broker closed `channel`, the one requests went out on: the client takes no calls
    /// until ``setRunning(_:)`` gives it a new one (callers wait in ``ready()``), and the calls
    /// whose requests went out on it fail with `error`, the broker's reason. Returns how many.
    @discardableResult
    func channelClosed(_ channel: ObjectIdentifier, error: any Error) -> Int {
        var failed: [CheckedContinuation<RabbitMQDelivery, any Error>] = []
        var count = 0
        let drainWaiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            if case .running = state.phase { state.phase = .starting }
            for (id, slot) in state.calls {
                guard case .waiting(let continuation, let pending) = slot, pending.channel == channel else { continue }
                count += 1
                if let continuation {
                    state.calls[id] = nil
                    failed.append(continuation)
                } else {
                    // Its caller is still publishing or about to wait: it finds the error there.
                    state.calls[id] = .done(.failure(error))
                }
            }
            return state.takeDrainWaiterIfDrained()
        }
        for continuation in failed { continuation.resume(throwing: error) }
        drainWaiter?.resume()
        return count
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
                    case .waiting(nil, let pending):
                        state.calls[id] = .waiting(continuation, pending)
                        return nil
                    case .done(let result):
                        state.calls[id] = nil
                        return result
                    case .waiting(.some, _), nil:
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
