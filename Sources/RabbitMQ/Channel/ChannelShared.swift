/// The thread-safe identity and state of one opened channel, shared by its public handle,
/// its deliveries and the I/O thread. A channel number is reused after close, so the I/O
/// thread recognises stale commands by object identity, not by number.
final class ChannelShared: Sendable {
    struct State {
        var closeReason: RabbitMQError?
        /// The confirm window: capacity 0 until `confirmSelect` succeeded.
        var confirms = PermitPool(capacity: 0)
        var publishesSinceYield = 0
        /// The per-consumer prefetch the broker last accepted (0: none), which a stream
        /// consumer needs.
        var perConsumerPrefetch: UInt16 = 0
    }

    /// A publisher that never has to wait (there is room) never suspends, and would keep a
    /// thread of the cooperative pool (two on a two-core machine) from every other task: it
    /// yields after this many publishes on the channel.
    static let publishesBetweenYields = 256

    let number: UInt16
    let core: ConnectionCore
    private let state = LockedValue(State())
    private let returns = Broadcaster<RabbitMQReturnedMessage>(bufferSize: 1024)

    init(number: UInt16, core: ConnectionCore) {
        self.number = number
        self.core = core
    }

    var closeReason: RabbitMQError? { state.withLock { $0.closeReason } }

    var perConsumerPrefetch: UInt16 { state.withLock { $0.perConsumerPrefetch } }

    func setPerConsumerPrefetch(_ count: UInt16) { state.withLock { $0.perConsumerPrefetch = count } }

    /// The connection's negotiated frame_max (the default 128 KiB until it is known): what a
    /// request or a content header must fit in.
    var frameMax: Int {
        let frameMax = core.negotiated.frameMax
        return frameMax > 0 ? frameMax : 131_072
    }

    func checkOpen() throws(RabbitMQError) {
        if let reason = state.withLock({ $0.closeReason }) { throw reason }
    }

    func settle(_ settlement: Settlement) throws(RabbitMQError) {
        try checkOpen()
        try core.submit(.settle(self, settlement))
    }

    /// I/O thread: the channel is closed for its users; wake everyone waiting on it with `reason`.
    func markClosed(_ reason: RabbitMQError) {
        let waiters: [PermitPool.Continuation] = state.withLock { state in
            if state.closeReason == nil { state.closeReason = reason }
            return state.confirms.releaseAll()
        }
        for waiter in waiters { waiter.resume(throwing: reason) }
        returns.finish()
    }

    // MARK: Confirm window

    func enableConfirms(capacity: Int) {
        let ready = state.withLock { state in
            state.confirms.capacity = capacity
            return state.confirms.release(0)
        }
        for waiter in ready { waiter.resume() }
    }

    var isConfirmMode: Bool { state.withLock { $0.confirms.capacity > 0 } }

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
            guard state.confirms.capacity > 0 else { return Admission(confirming: false, shouldYield: shouldYield) }
            guard state.confirms.tryAcquire() else { return nil }
            return Admission(confirming: true, shouldYield: shouldYield)
        }
    }

    /// Takes one slot of the confirm window, suspending while it is full (the slow path, after
    /// ``tryAdmitPublish()`` found the window full). Ends with `CancellationError` at once
    /// when the task is cancelled, and with the close reason when the channel closes.
    func reserveConfirmSlot() async throws {
        let id = state.withLock { $0.confirms.makeID() }
        try await PermitPool.wait(
            register: { continuation in
                state.withLock { state -> Result<PermitPool.Registration, any Error> in
                    if let reason = state.closeReason { return .failure(reason) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    return .success(state.confirms.register(id: id, continuation: continuation, deadline: nil))
                }
            },
            cancel: { [state] in state.withLock { $0.confirms.removeWaiter(id) } })
    }

    /// Gives back `count` confirm slots (I/O thread after acks/nacks, or a caller whose
    /// publish never reached the inbox).
    func releaseConfirmSlots(_ count: Int) {
        guard count > 0 else { return }
        let ready = state.withLock { $0.confirms.release(count) }
        for waiter in ready { waiter.resume() }
    }

    var outstandingConfirms: Int { state.withLock { $0.confirms.used } }

    // MARK: Returns

    func makeReturnStream() -> AsyncStream<RabbitMQReturnedMessage> { returns.subscribe() }

    func emitReturn(_ message: RabbitMQReturnedMessage) { returns.yield(message) }
}
