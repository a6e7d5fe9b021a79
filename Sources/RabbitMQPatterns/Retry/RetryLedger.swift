import Foundation

/// The retries one ``RabbitMQRetryQueue/run(_:handler:)`` has put on the ladder lately, so that
/// a copy of the same attempt does not climb it a second time: the pure part, bounded.
///
/// The copy comes from a reconnect. The broker requeues a delivery whose connection died
/// unacknowledged and hands it out again (`redelivered`) on the recovered connection, while
/// the handler of the first copy may still be running, and an acknowledgement sent for the
/// first copy afterwards is dropped (its delivery tag died with the connection). Without the
/// ledger both copies would fail, both be republished, and two messages climb the ladder.
struct RetryLedger {
    /// One attempt of one message: its id, the retries before it, and the replays before those.
    struct Key: Hashable {
        var messageID: String
        var retryCount: Int
        var replayCount: Int
    }

    /// The most keys kept; the oldest go first.
    let capacity: Int
    private var keys: Set<Key> = []
    private var order: [Key] = []
    private var oldest = 0

    init(capacity: Int = 10_000) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    /// Whether a copy of this attempt was put on the ladder.
    func contains(_ key: Key) -> Bool { keys.contains(key) }

    /// Claims the attempt before its republish: false when a copy claimed it already.
    mutating func reserve(_ key: Key) -> Bool {
        guard keys.insert(key).inserted else { return false }
        order.append(key)
        if order.count - oldest > capacity {
            keys.remove(order[oldest])
            oldest += 1
            // Drop the forgotten prefix now and then, not on every insert.
            if oldest >= capacity {
                order.removeFirst(oldest)
                oldest = 0
            }
        }
        return true
    }

    /// Gives the claim back: the republish failed, so no copy is on the ladder.
    mutating func release(_ key: Key) {
        keys.remove(key)
    }

    /// How many keys are kept.
    var count: Int { keys.count }
}

/// A ``RetryLedger`` shared by the handler tasks of one `run()`.
final class SharedRetryLedger: @unchecked Sendable {
    // @unchecked Sendable is sound: `ledger` is only touched while `lock` is held. NSLock, not
    // Synchronization.Mutex, so that ThreadSanitizer sees the locking.
    private let lock = NSLock()
    private var ledger: RetryLedger

    init(capacity: Int = 10_000) { ledger = RetryLedger(capacity: capacity) }

    func contains(_ key: RetryLedger.Key) -> Bool { lock.withLock { ledger.contains(key) } }
    func reserve(_ key: RetryLedger.Key) -> Bool { lock.withLock { ledger.reserve(key) } }
    func release(_ key: RetryLedger.Key) { lock.withLock { ledger.release(key) } }
}
