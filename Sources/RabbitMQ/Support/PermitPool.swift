/// A counting limit with a FIFO of suspended callers: the publish buffer of a connection, the
/// confirm window of a channel, and (with no permits, opened all at once) the gate publishers
/// wait at while their connection recovers.
///
/// A plain value kept under its owner's lock, so that a permit is taken in the same critical
/// section as whatever else the owner checks. ``PermitPool/wait(register:cancel:)`` is the one
/// way a caller suspends for it: cancellation-aware, never leaking or double-resuming a
/// continuation. Waiters may carry a deadline, which the owner's timer enforces.
struct PermitPool: Sendable {
    typealias Continuation = CheckedContinuation<Void, any Error>

    struct Waiter: Sendable {
        var id: Int
        var continuation: Continuation
        var deadline: ContinuousClock.Instant?
    }

    /// What ``register(id:continuation:deadline:)`` did.
    enum Registration {
        /// A permit was free: resume now.
        case granted
        /// Queued: a release, the deadline, a cancellation or a failure resumes it.
        case queued
    }

    var capacity: Int
    private(set) var used = 0
    private var waiters: [Waiter] = []
    private var nextID = 0

    init(capacity: Int) {
        self.capacity = capacity
    }

    var waiterCount: Int { waiters.count }

    /// A permit now, if one is free and nobody waits before us.
    @inline(__always)
    mutating func tryAcquire() -> Bool {
        guard used < capacity, waiters.isEmpty else { return false }
        used += 1
        return true
    }

    /// An id for a waiter about to register (taken before suspending, so a cancellation
    /// handler can find it).
    mutating func makeID() -> Int {
        defer { nextID += 1 }
        return nextID
    }

    /// Takes a permit if one is free, else queues the caller.
    mutating func register(id: Int, continuation: Continuation, deadline: ContinuousClock.Instant?) -> Registration {
        if tryAcquire() { return .granted }
        waiters.append(Waiter(id: id, continuation: continuation, deadline: deadline))
        return .queued
    }

    /// Gives back `count` permits and hands them to waiters, oldest first: resume those.
    mutating func release(_ count: Int) -> [Continuation] {
        used = max(0, used - count)
        var ready: [Continuation] = []
        while used < capacity, !waiters.isEmpty {
            used += 1
            ready.append(waiters.removeFirst().continuation)
        }
        return ready
    }

    /// A gate opens: every waiter goes (they try again for what they waited for).
    mutating func releaseAll() -> [Continuation] {
        defer { waiters.removeAll() }
        return waiters.map(\.continuation)
    }

    /// The waiter `id`, removed (it was cancelled); nil if it was resumed already.
    mutating func removeWaiter(_ id: Int) -> Continuation? {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return nil }
        return waiters.remove(at: index).continuation
    }

    /// Waiters whose deadline has passed, removed.
    mutating func expire(now: ContinuousClock.Instant) -> [Continuation] {
        guard waiters.contains(where: { $0.deadline.map { $0 <= now } ?? false }) else { return [] }
        var expired: [Continuation] = []
        waiters.removeAll { waiter in
            guard let deadline = waiter.deadline, deadline <= now else { return false }
            expired.append(waiter.continuation)
            return true
        }
        return expired
    }

    var earliestDeadline: ContinuousClock.Instant? {
        var earliest: ContinuousClock.Instant?
        for waiter in waiters {
            if let deadline = waiter.deadline, earliest.map({ deadline < $0 }) ?? true { earliest = deadline }
        }
        return earliest
    }

    /// Suspends until `register` (called under the owner's lock, with `Task.isCancelled`
    /// already checked there) grants or queues the caller and it is resumed. `cancel`
    /// (under the lock too) removes the waiter if it is still queued; it is then resumed
    /// with `CancellationError`.
    static func wait(
        register: (Continuation) -> Result<Registration, any Error>,
        cancel: @escaping @Sendable () -> Continuation?
    ) async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Continuation) in
                switch register(continuation) {
                case .success(.granted): continuation.resume()
                case .success(.queued): break
                case .failure(let error): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            cancel()?.resume(throwing: CancellationError())
        }
    }
}
