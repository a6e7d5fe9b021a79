import Foundation
import RabbitMQ

/// The retries one ``RabbitMQRetryQueue/run(_:handler:)`` has put on the ladder lately, so that
/// a copy of the same attempt does not climb it a second time: the pure part, bounded.
///
/// The copy comes from a reconnect. The broker requeues a delivery whose connection died
/// unacknowledged and hands it out again (`redelivered`) on the recovered connection, while
/// the handler of the first copy may still be running, and an acknowledgement sent for the
/// first copy afterwards is dropped (its delivery tag died with the connection). Without the
/// ledger both copies would fail, both be republished, and two messages climb the ladder.
/// Only a confirmed republish makes another copy redundant: skipping a copy because of one
/// still in flight would lose the message if that republish then failed.
struct RetryLedger {
    /// One attempt of one message: its id, the retries before it, and the replays before those.
    struct Key: Hashable {
        var messageID: String
        var retryCount: Int
        var replayCount: Int
    }

    /// What ``claim(_:)`` found.
    enum Claim: Equatable {
        /// Nobody had: the caller republishes, then calls ``confirm(_:)`` or ``release(_:)``.
        case claimed
        /// Another copy's republish is confirmed: this copy only needs acknowledging.
        case onTheLadder
        /// Another copy's republish is still in flight and may yet fail: republish this one
        /// too (a possible duplicate, never a loss), without touching the other's claim.
        case inFlight
    }

    /// The most keys kept; the oldest go first.
    let capacity: Int
    /// Each key, and whether its republish is confirmed.
    private var keys: [Key: Bool] = [:]
    private var order: [Key] = []
    private var oldest = 0

    init(capacity: Int = 10_000) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    /// Whether a copy of this attempt is on the ladder, its republish confirmed.
    func isOnTheLadder(_ key: Key) -> Bool { keys[key] == true }

    /// Claims the attempt before its republish.
    mutating func claim(_ key: Key) -> Claim {
        switch keys[key] {
        case true?: return .onTheLadder
        case false?: return .inFlight
        case nil: break
        }
        keys[key] = false
        order.append(key)
        if order.count - oldest > capacity {
            keys[order[oldest]] = nil
            oldest += 1
            // Drop the forgotten prefix now and then, not on every claim.
            if oldest >= capacity {
                order.removeFirst(oldest)
                oldest = 0
            }
        }
        return .claimed
    }

    /// The claimed republish is confirmed: the attempt is on the ladder.
    mutating func confirm(_ key: Key) {
        if keys[key] != nil { keys[key] = true }
    }

    /// Gives the claim back: the republish failed, so no copy is on the ladder.
    mutating func release(_ key: Key) {
        keys[key] = nil
    }

    /// How many keys are kept.
    var count: Int { keys.count }
}

/// A ``RetryLedger`` shared by the handler tasks of one `run()`, behind the package's
/// pthread-mutex ``LockedValue`` (which ThreadSanitizer sees, unlike Synchronization.Mutex).
final class SharedRetryLedger: Sendable {
    private let ledger: LockedValue<RetryLedger>

    init(capacity: Int = 10_000) { ledger = LockedValue(RetryLedger(capacity: capacity)) }

    func isOnTheLadder(_ key: RetryLedger.Key) -> Bool { ledger.withLock { $0.isOnTheLadder(key) } }
    func claim(_ key: RetryLedger.Key) -> RetryLedger.Claim { ledger.withLock { $0.claim(key) } }
    func confirm(_ key: RetryLedger.Key) { ledger.withLock { $0.confirm(key) } }
    func release(_ key: RetryLedger.Key) { ledger.withLock { $0.release(key) } }
}
