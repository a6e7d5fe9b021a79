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
    /// The prefix of this run's order ids, `order-<run>-`: the queues are durable and shared
    /// by every run on the same prefix, so they may hold orders of an earlier run (stopped
    /// mid-way, or another copy), which must not count towards this one.
    private let idPrefix: String

    // Metric names are dotted, like the library's (`rabbitmq.messages.published`); the
    // Prometheus factory turns the dots into underscores.
    private let placedCounter = Counter(label: "orders.placed")
    private let quotedCounter = Counter(label: "orders.quoted")
    private let auditedCounter = Counter(label: "orders.audited")
    private let fulfilledCounter = Counter(label: "orders.fulfilled")
    private let retriedCounter = Counter(label: "orders.fulfilment.retried")

    /// A tally that calls the run complete once `expected` orders of run `run` are fulfilled
    /// and audited.
    init(expected: Int, run: String) {
        self.expected = expected
        self.idPrefix = "order-\(run)-"
    }

    /// The id of this run's order number `number`.
    func orderID(_ number: Int) -> String { idPrefix + String(number) }

    /// The number of one of this run's orders; nil for an order of another run.
    func number(ofOwn orderID: String) -> Int? {
        guard orderID.hasPrefix(idPrefix) else { return nil }
        return Int(orderID.dropFirst(idPrefix.count))
    }

    var counts: Counts { state.withLock { $0.counts } }

    func placed() { update { $0.placed += 1 }; placedCounter.increment() }
    func quoted() { update { $0.quoted += 1 }; quotedCounter.increment() }
    /// Counts the audit of `orderID` if it is one of this run's orders.
    func audited(_ orderID: String) {
        guard number(ofOwn: orderID) != nil else { return }
        update { $0.audited += 1 }
        auditedCounter.increment()
    }

    /// Counts the fulfilment of `orderID` if it is one of this run's orders.
    func fulfilled(_ orderID: String) {
        guard number(ofOwn: orderID) != nil else { return }
        update { $0.fulfilled += 1 }
        fulfilledCounter.increment()
    }

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
