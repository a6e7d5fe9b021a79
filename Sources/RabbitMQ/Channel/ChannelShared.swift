
/// The thread-safe identity and state of one opened channel, shared by its public handle,
/// its deliveries and the I/O thread. A channel number is reused after close, so the I/O
/// thread recognises stale commands by object identity, not by number.
final class ChannelShared: Sendable {
    struct State {
        var closeReason: RabbitMQError?
        var confirmCapacity = 0
        var outstandingConfirms = 0
        var confirmWaiters: [CheckedContinuation<Void, any Error>] = []
        var returnSubscribers: [Int: AsyncStream<RabbitMQReturnedMessage>.Continuation] = [:]
        var nextReturnSubscriber = 0
        var publishesSinceYield = 0
    }

    /// A publisher that never has to wait (there is room) never suspends, and would keep a
    /// thread of the cooperative pool (two on a two-core machine) from every other task: it
    /// yields after this many publishes on the channel.
    static let publishesBetweenYields = 256

    let number: UInt16
    let core: ConnectionCore
    private let state = LockedValue(State())

    init(number: UInt16, core: ConnectionCore) {
        self.number = number
        self.core = core
    }

    var closeReason: RabbitMQError? { state.withLock { $0.closeReason } }

    func checkOpen() throws(RabbitMQError) {
        if let reason = state.withLock({ $0.closeReason }) { throw reason }
    }

    func settle(_ settlement: Settlement) throws(RabbitMQError) {
        try checkOpen()
        try core.submit(.settle(self, settlement))
    }

    /// I/O thread: the channel is gone; wake everyone waiting on it with `reason`.
    func markClosed(_ reason: RabbitMQError) {
        let (waiters, returns) = state.withLock { state in
            if state.closeReason == nil { state.closeReason = reason }
            let waiters = state.confirmWaiters
            state.confirmWaiters.removeAll()
            let returns = Array(state.returnSubscribers.values)
            state.returnSubscribers.removeAll()
            return (waiters, returns)
        }
        for waiter in waiters { waiter.resume(throwing: reason) }
        for subscriber in returns { subscriber.finish() }
    }

    // MARK: Confirm window

    func enableConfirms(capacity: Int) {
        state.withLock { $0.confirmCapacity = capacity }
    }

    var isConfirmMode: Bool { state.withLock { $0.confirmCapacity > 0 } }

    struct Admission {
        /// The channel is in confirm mode (a window slot was taken).
        var confirming: Bool
        /// The publisher should `Task.yield()` once its message is queued.
        var shouldYield: Bool
    }

    /// Admits one publish with a single lock: throws if the channel is closed and, in confirm
    /// mode, takes a window slot; nil when the window is full (then ``reserveConfirmSlot()``).
    @inline(__always)
    func tryAdmitPublish() throws(RabbitMQError) -> Admission? {
        try state.withLock { state throws(RabbitMQError) in
            if let reason = state.closeReason { throw reason }
            state.publishesSinceYield += 1
            let shouldYield = state.publishesSinceYield >= Self.publishesBetweenYields
            if shouldYield { state.publishesSinceYield = 0 }
            guard state.confirmCapacity > 0 else { return Admission(confirming: false, shouldYield: shouldYield) }
            guard state.outstandingConfirms < state.confirmCapacity, state.confirmWaiters.isEmpty else { return nil }
            state.outstandingConfirms += 1
            return Admission(confirming: true, shouldYield: shouldYield)
        }
    }

    /// Takes one slot of the confirm window, suspending while it is full (the slow path, after
    /// ``tryAdmitPublish()`` found the window full).
    func reserveConfirmSlot() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome: RabbitMQError?? = state.withLock { state in
                if let reason = state.closeReason { return .some(reason) }
                if state.outstandingConfirms < state.confirmCapacity && state.confirmWaiters.isEmpty {
                    state.outstandingConfirms += 1
                    return .some(nil)
                }
                state.confirmWaiters.append(continuation)
                return nil
            }
            switch outcome {
            case .some(.some(let error)): continuation.resume(throwing: error)
            case .some(.none): continuation.resume()
            case .none: break
            }
        }
    }

    /// Gives back `count` confirm slots (I/O thread after acks/nacks, or a caller whose
    /// publish never reached the inbox).
    func releaseConfirmSlots(_ count: Int) {
        guard count > 0 else { return }
        let ready: [CheckedContinuation<Void, any Error>] = state.withLock { state in
            state.outstandingConfirms = max(0, state.outstandingConfirms - count)
            var ready: [CheckedContinuation<Void, any Error>] = []
            while state.outstandingConfirms < state.confirmCapacity, !state.confirmWaiters.isEmpty {
                state.outstandingConfirms += 1
                ready.append(state.confirmWaiters.removeFirst())
            }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    var outstandingConfirms: Int { state.withLock { $0.outstandingConfirms } }

    // MARK: Returns

    func makeReturnStream() -> AsyncStream<RabbitMQReturnedMessage> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: RabbitMQReturnedMessage.self, bufferingPolicy: .bufferingNewest(1024))
        let id: Int? = state.withLock { state in
            guard state.closeReason == nil else { return nil }
            let id = state.nextReturnSubscriber
            state.nextReturnSubscriber += 1
            state.returnSubscribers[id] = continuation
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                self?.state.withLock { _ = $0.returnSubscribers.removeValue(forKey: id) }
            }
        } else {
            continuation.finish()
        }
        return stream
    }

    func emitReturn(_ message: RabbitMQReturnedMessage) {
        let subscribers = state.withLock { Array($0.returnSubscribers.values) }
        for subscriber in subscribers { subscriber.yield(message) }
    }
}
