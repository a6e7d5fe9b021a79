import RabbitMQ
import Synchronization

/// Records a connection's events with the time each arrived, and lets a test await the one
/// it needs (no polling: a waiter is resumed by the event that matches it).
public final class ConnectionEventLog: Sendable {
    /// One recorded event.
    public struct Entry: Sendable {
        public var at: ContinuousClock.Instant
        public var event: RabbitMQConnectionEvent
    }

    private struct Waiter {
        var from: Int
        var match: @Sendable (RabbitMQConnectionEvent) -> Bool
        var continuation: CheckedContinuation<Entry, any Error>
    }

    private struct State {
        var entries: [Entry] = []
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
        var ended = false
    }

    private final class Box: Sendable {
        let state = LockedValue(State())

        func append(_ event: RabbitMQConnectionEvent) {
            let ready: [(CheckedContinuation<Entry, any Error>, Entry)] = state.withLock { state in
                let entry = Entry(at: .now, event: event)
                state.entries.append(entry)
                let index = state.entries.count - 1
                var ready: [(CheckedContinuation<Entry, any Error>, Entry)] = []
                for (key, waiter) in state.waiters where index >= waiter.from && waiter.match(event) {
                    ready.append((waiter.continuation, entry))
                    state.waiters[key] = nil
                }
                return ready
            }
            for (continuation, entry) in ready { continuation.resume(returning: entry) }
        }

        func end() {
            let waiters = state.withLock { state in
                state.ended = true
                let waiters = Array(state.waiters.values)
                state.waiters.removeAll()
                return waiters
            }
            for waiter in waiters {
                waiter.continuation.resume(throwing: TestSupportError("the connection's events ended"))
            }
        }
    }

    private let box = Box()
    private let task: Task<Void, Never>

    /// Starts recording `connection`'s events.
    public init(_ connection: RabbitMQConnection) {
        let stream = connection.events()
        let box = self.box
        task = Task {
            for await event in stream { box.append(event) }
            box.end()
        }
    }

    deinit { task.cancel() }

    /// Every event so far, in order.
    public var all: [RabbitMQConnectionEvent] { box.state.withLock { $0.entries.map(\.event) } }

    /// How many events were recorded so far (an index for `next(after:)`).
    public var count: Int { box.state.withLock { $0.entries.count } }

    /// The first `recovered` event at or after index `from`, waiting for it if needed.
    @discardableResult
    public func recovered(_ what: String = "recovered", after from: Int = 0) async throws -> Entry {
        try await next(what, after: from) { $0.isRecovered }
    }

    /// The first event at or after index `from` that matches, waiting for it if needed.
    @discardableResult
    public func next(
        _ what: String, after from: Int = 0, timeout: Duration = .seconds(120),
        where match: @escaping @Sendable (RabbitMQConnectionEvent) -> Bool
    ) async throws -> Entry {
        let box = self.box
        return try await withTimeout(timeout, what) {
            let key = box.state.withLock { state in
                defer { state.nextWaiter += 1 }
                return state.nextWaiter
            }
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Entry, any Error>) in
                    let found: Result<Entry, any Error>? = box.state.withLock { state in
                        if let entry = state.entries.dropFirst(from).first(where: { match($0.event) }) {
                            return .success(entry)
                        }
                        if state.ended { return .failure(TestSupportError("the connection's events ended")) }
                        // Checked under the lock: a cancellation handler that ran before this
                        // found nothing to remove.
                        if Task.isCancelled { return .failure(CancellationError()) }
                        state.waiters[key] = Waiter(from: from, match: match, continuation: continuation)
                        return nil
                    }
                    if let found { continuation.resume(with: found) }
                }
            } onCancel: {
                let waiter = box.state.withLock { $0.waiters.removeValue(forKey: key) }
                waiter?.continuation.resume(throwing: CancellationError())
            }
        }
    }
}

extension RabbitMQConnectionEvent {
    /// Whether this is `.recovered` (for filters and waits in tests).
    public var isRecovered: Bool {
        if case .recovered = self { true } else { false }
    }
}
