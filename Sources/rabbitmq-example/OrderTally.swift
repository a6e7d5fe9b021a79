import Metrics
import Synchronization

/// What the service did, counted twice: in memory for the summary at exit and the "all
/// processed" decision, and as swift-metrics counters for the Prometheus exposition.
final class OrderTally: Sendable {
    /// The counts of one run.
    struct Counts: Sendable, Equatable {
        var placed = 0
        var quoted = 0
        var audited = 0
        var fulfilled = 0
        var retried = 0
    }

    private struct State {
        var counts = Counts()
        /// The publisher, waiting until every order is processed.
        var waiter: CheckedContinuation<Void, Never>?
        var stopWaiting = false
    }

    private let state = Mutex(State())
    private let expected: Int

    // Metric names are dotted, like the library's (`rabbitmq.messages.published`); the
    // Prometheus factory turns the dots into underscores.
    private let placedCounter = Counter(label: "orders.placed")
    private let quotedCounter = Counter(label: "orders.quoted")
    private let auditedCounter = Counter(label: "orders.audited")
    private let fulfilledCounter = Counter(label: "orders.fulfilled")
    private let retriedCounter = Counter(label: "orders.fulfilment.retried")

    /// A tally that calls the run complete once `expected` orders are fulfilled and audited.
    init(expected: Int) { self.expected = expected }

    var counts: Counts { state.withLock { $0.counts } }

    func placed() { update { $0.placed += 1 }; placedCounter.increment() }
    func quoted() { update { $0.quoted += 1 }; quotedCounter.increment() }
    func audited() { update { $0.audited += 1 }; auditedCounter.increment() }
    func fulfilled() { update { $0.fulfilled += 1 }; fulfilledCounter.increment() }
    func retried() { update { $0.retried += 1 }; retriedCounter.increment() }

    private func update(_ change: (inout Counts) -> Void) {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            change(&state.counts)
            return isComplete(state.counts) ? state.waiter.take() : nil
        }
        waiter?.resume()
    }

    private func isComplete(_ counts: Counts) -> Bool {
        counts.fulfilled >= expected && counts.audited >= expected
    }

    /// Waits until every order is fulfilled and audited, or ``stopWaiting()``
    /// is called. One waiter at a time.
    func waitUntilProcessed() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { state in
                if state.stopWaiting || isComplete(state.counts) { return true }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Ends ``waitUntilProcessed()`` now (shutting down); safe from any thread.
    func stopWaiting() {
        state.withLock { state in
            state.stopWaiting = true
            return state.waiter.take()
        }?.resume()
    }
}
