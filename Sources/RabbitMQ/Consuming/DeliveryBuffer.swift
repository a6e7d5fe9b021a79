import Synchronization

/// Hands one consumer's deliveries from the I/O thread to the task iterating them.
///
/// The I/O thread appends under a lock and never resumes the iterating task per message:
/// it notes that a waiter needs waking and wakes it once at the end of its read turn, with
/// everything that arrived meanwhile. The iterator then takes deliveries from its own batch
/// without locking or suspending. One suspension per read turn instead of one per message
/// is what makes consuming cost about what it costs in C. Prefetch bounds the buffer (with
/// manual acks); the buffer itself never drops anything.
///
/// Single consumer: one iterator at a time, as with `AsyncThrowingStream`.
///
/// After the connection was lost, deliveries of the dead connection that were buffered but
/// not handed out yet are dropped (``dropStale(before:)``): the broker requeued them, and they
/// come back marked redelivered, so nothing is handed out twice without the caller knowing.
final class DeliveryBuffer: Sendable {
    enum PushResult {
        /// Buffered; the iterator is running or already scheduled to be woken.
        case buffered
        /// Buffered; the iterator waits: call ``wake()`` at the end of the read turn.
        case needsWake
        /// Nobody iterates any more: the caller gives the delivery back to the broker.
        case terminated
    }

    private enum End {
        case finished
        case failed(any Error)
        /// The iterating side went away (iterator dropped or its task cancelled).
        case cancelled
    }

    private struct State {
        var items: [RabbitMQDelivery] = []
        /// An emptied batch the iterator gave back: its capacity takes the next deliveries,
        /// so the I/O thread appends without growing a new array every turn.
        var spare: [RabbitMQDelivery] = []
        var waiter: CheckedContinuation<[RabbitMQDelivery], any Error>?
        var wakeScheduled = false
        var end: End?
        /// The end was reported to the iterator (thrown once, then nil for ever).
        var endReported = false
        /// Sends basic.cancel; set once the consumer is registered.
        var onCancel: (@Sendable () -> Void)?
    }

    private let state = LockedValue(State())
    /// Deliveries (to settle) from connection epochs before this one are stale.
    private let staleBefore = Atomic<UInt64>(0)
    /// A stream consumer's: the iterator notes the offset of each delivery it hands out.
    let tracksStreamOffset: Bool
    /// One more than the offset of the last delivery handed out; 0 before the first.
    private let nextStreamOffset = Atomic<UInt64>(0)
    static let secondIterator = RabbitMQError(
        code: .invalidConfiguration, scope: .none,
        message: "the consumer is already being iterated by another task: iterate a consumer from one task at a time")

    /// A larger emptied batch is dropped instead of kept (32 KiB of references).
    static let maxSpareCapacity = 4096

    init(tracksStreamOffset: Bool = false) {
        self.tracksStreamOffset = tracksStreamOffset
    }

    /// Iterator: a stream consumer's delivery goes to the application.
    func handedOut(_ delivery: RabbitMQDelivery) {
        if let offset = delivery.streamOffset { nextStreamOffset.store(offset + 1, ordering: .relaxed) }
    }

    /// Where a stream consumer goes on after a recovery: after the last delivery it handed
    /// out (the lost connection's others are dropped, see ``dropStale(before:)``); nil before
    /// the first, when it starts again from the offset it was created with.
    var streamResumeOffset: UInt64? {
        let next = nextStreamOffset.load(ordering: .relaxed)
        return next == 0 ? nil : next
    }

    // MARK: I/O thread

    func push(_ delivery: RabbitMQDelivery) -> PushResult {
        state.withLock { state in
            if case .cancelled = state.end { return .terminated }
            state.items.append(delivery)
            guard state.waiter != nil, !state.wakeScheduled else { return .buffered }
            state.wakeScheduled = true
            return .needsWake
        }
    }

    /// The connection was lost: deliveries from epochs before `epoch` still buffered are
    /// dropped, and an iterator skips those it took already but has not handed out.
    func dropStale(before epoch: UInt64) {
        staleBefore.store(epoch, ordering: .relaxed)
        state.withLock { state in
            state.items.removeAll { $0.isSettleable && $0.epoch < epoch }
        }
    }

    /// A delivery of a connection that is gone, which the broker requeued.
    @inline(__always)
    func isStale(_ delivery: RabbitMQDelivery) -> Bool {
        delivery.epoch < staleBefore.load(ordering: .relaxed) && delivery.isSettleable
    }

    /// Resumes the waiting iterator with everything buffered.
    func wake() {
        let resumed: (CheckedContinuation<[RabbitMQDelivery], any Error>, [RabbitMQDelivery])? = state.withLock { state in
            state.wakeScheduled = false
            guard let waiter = state.waiter, !state.items.isEmpty else { return nil }
            state.waiter = nil
            return (waiter, Self.takeItems(&state))
        }
        if let (waiter, batch) = resumed {
            SanitizerSync.release(self)
            waiter.resume(returning: batch)
        }
    }

    /// Ends the sequence after the buffered deliveries: normally, or by throwing `error`.
    func finish(throwing error: (any Error)? = nil) {
        let waiter: CheckedContinuation<[RabbitMQDelivery], any Error>? = state.withLock { state in
            guard state.end == nil else { return nil }
            state.end = error.map { .failed($0) } ?? .finished
            state.onCancel = nil
            // With deliveries still buffered, a scheduled wake hands them over and the
            // iterator sees the end when it comes back.
            guard state.items.isEmpty, let waiter = state.waiter.take() else { return nil }
            state.endReported = true
            return waiter
        }
        guard let waiter else {
            wake()
            return
        }
        SanitizerSync.release(self)
        switch error {
        case .some(let error): waiter.resume(throwing: error)
        case .none: waiter.resume(returning: [])
        }
    }

    // MARK: Consumer side

    func setOnCancel(_ onCancel: @escaping @Sendable () -> Void) {
        let cancelNow: Bool = state.withLock { state in
            guard state.end == nil else {
                if case .cancelled = state.end { return true }
                return false
            }
            state.onCancel = onCancel
            return false
        }
        if cancelNow { onCancel() }
    }

    /// The iterating side is gone: later deliveries are refused and the consumer cancelled;
    /// deliveries buffered but never handed out go back to the queue.
    func cancel() {
        let (waiter, onCancel, buffered): (
            CheckedContinuation<[RabbitMQDelivery], any Error>?, (@Sendable () -> Void)?, [RabbitMQDelivery]
        ) = state.withLock { state in
            guard state.end == nil else {
                // Ended already (cancelled, or closed by the broker): what an iterator put
                // back is still unacknowledged; give it back too.
                let leftovers = state.items
                state.items = []
                return (nil, nil, leftovers)
            }
            state.end = .cancelled
            state.endReported = true
            let buffered = state.items
            state.items = []
            let onCancel = state.onCancel
            state.onCancel = nil
            return (state.waiter.take(), onCancel, buffered)
        }
        SanitizerSync.release(self)
        waiter?.resume(returning: [])
        // basic.cancel first, so the broker does not hand the rejected messages straight back.
        onCancel?()
        Self.requeue(buffered)
    }

    /// Ends the sequence at once with `error` (its owner cannot go on): the iterator throws
    /// it next, the consumer is cancelled, and what was buffered goes back to the queue.
    func stop(throwing error: any Error) {
        let (waiter, onCancel, buffered): (
            CheckedContinuation<[RabbitMQDelivery], any Error>?, (@Sendable () -> Void)?, [RabbitMQDelivery]
        ) = state.withLock { state in
            guard state.end == nil else { return (nil, nil, []) }
            state.end = .failed(error)
            let buffered = state.items
            state.items = []
            let onCancel = state.onCancel
            state.onCancel = nil
            let waiter = state.waiter.take()
            if waiter != nil { state.endReported = true }
            return (waiter, onCancel, buffered)
        }
        SanitizerSync.release(self)
        waiter?.resume(throwing: error)
        onCancel?()
        Self.requeue(buffered)
    }

    /// Rejects with requeue what was delivered but will never be handed out (auto-ack ones
    /// need nothing). A channel that closed meanwhile has requeued them already.
    private static func requeue<Deliveries: Sequence<RabbitMQDelivery>>(_ deliveries: Deliveries) {
        for delivery in deliveries where delivery.isSettleable { try? delivery.reject(requeue: true) }
    }

    /// Puts deliveries an iterator took but never handed out back in front, in order.
    func putBack(_ unread: ArraySlice<RabbitMQDelivery>) {
        let rejected: ArraySlice<RabbitMQDelivery> = state.withLock { state in
            if case .cancelled = state.end { return unread }
            state.items.insert(contentsOf: unread, at: 0)
            return []
        }
        Self.requeue(rejected)
    }

    /// The next batch, empty at the end of the sequence, and whether the caller had to wait
    /// for it. Throws the failure that ended the sequence, once.
    /// `spare` is the caller's emptied previous batch, kept for reuse.
    func nextBatch(
        isolation actor: isolated (any Actor)? = #isolation, returning spare: consuming [RabbitMQDelivery]
    ) async throws -> ([RabbitMQDelivery], suspended: Bool) {
        var spare = spare
        let immediate = state.withLock { state in
            if state.spare.capacity == 0, spare.isEmpty, spare.capacity <= Self.maxSpareCapacity { swap(&state.spare, &spare) }
            return Self.takeReady(&state)
        }
        if let immediate { return (try immediate.get(), false) }
        defer { SanitizerSync.acquire(self) }
        let batch = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation(isolation: actor) { (continuation: CheckedContinuation<[RabbitMQDelivery], any Error>) in
                let ready: Result<[RabbitMQDelivery], any Error>? = state.withLock { state in
                    if let ready = Self.takeReady(&state) { return ready }
                    // A second task iterating at the same time would replace (and strand) the
                    // first one's waiter: it gets an error instead.
                    guard state.waiter == nil else { return .failure(Self.secondIterator) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            self.cancel()
        }
        return (batch, true)
    }

    /// The buffered deliveries, leaving the spare array (if any) in their place.
    private static func takeItems(_ state: inout State) -> [RabbitMQDelivery] {
        var batch = state.spare
        state.spare = []
        swap(&batch, &state.items)
        return batch
    }

    /// What an iterator can have without waiting: the buffered deliveries, or the end of the
    /// sequence (an empty batch, or the failure that ended it); nil when it must wait.
    private static func takeReady(_ state: inout State) -> Result<[RabbitMQDelivery], any Error>? {
        if !state.items.isEmpty { return .success(takeItems(&state)) }
        guard let end = state.end else { return nil }
        // The failure is thrown once; after that, and after a normal end, the sequence is over.
        if state.endReported { return .success([]) }
        state.endReported = true
        if case .failed(let error) = end { return .failure(error) }
        return .success([])
    }
}

/// Cancels the consumer when the last ``RabbitMQConsumer`` value and the last iterator made
/// from it are gone.
final class DeliveryBufferLifetime: Sendable {
    let buffer: DeliveryBuffer

    init(buffer: DeliveryBuffer) { self.buffer = buffer }

    deinit { buffer.cancel() }
}

/// The iterating side: a batch taken from the buffer in one go and handed out one by one.
/// An iterator dropped early (the loop ended) puts what it had not handed out back in front
/// of the buffer, for the next iterator.
final class DeliveryIteratorState {
    /// A busy consumer always finds deliveries waiting and would never suspend, keeping a
    /// thread of the cooperative pool (two on a two-core machine) from every other task. It
    /// yields after this many deliveries handed out without suspending.
    static let deliveriesBetweenYields = 128

    let lifetime: DeliveryBufferLifetime
    // Touched only by the iterator's owner (an iterator is not Sendable), never concurrently.
    @exclusivity(unchecked) private var batch: [RabbitMQDelivery] = []
    @exclusivity(unchecked) private var index = 0
    @exclusivity(unchecked) private var sinceSuspension = 0

    init(lifetime: DeliveryBufferLifetime) { self.lifetime = lifetime }

    deinit {
        if index < batch.count { lifetime.buffer.putBack(batch[index...]) }
    }

    @inline(__always)
    func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> RabbitMQDelivery? {
        while true {
            if index == batch.count {
                try await refill(isolation: actor)
                if batch.isEmpty { return nil }
            }
            let delivery = batch[index]
            index += 1
            if lifetime.buffer.isStale(delivery) { continue }
            if lifetime.buffer.tracksStreamOffset { lifetime.buffer.handedOut(delivery) }
            return delivery
        }
    }

    /// The next delivery is in the local batch and will be handed out (a stale one would be
    /// skipped, and the iterator might then wait: false, to be safe).
    var hasDeliveryInHand: Bool {
        index < batch.count && !lifetime.buffer.isStale(batch[index])
    }

    private func refill(isolation actor: isolated (any Actor)?) async throws(any Error) {
        sinceSuspension += batch.count
        batch.removeAll(keepingCapacity: true)
        index = 0
        var spare: [RabbitMQDelivery] = []
        swap(&spare, &batch)
        if sinceSuspension >= Self.deliveriesBetweenYields {
            sinceSuspension = 0
            await Task.yield()
        }
        if Task.isCancelled {
            lifetime.buffer.cancel()
            return
        }
        let (next, suspended) = try await lifetime.buffer.nextBatch(isolation: actor, returning: spare)
        if suspended { sinceSuspension = 0 }
        batch = next
    }
}
