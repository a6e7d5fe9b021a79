import Foundation

/// Values recorded by handlers running in other tasks, read back by the test.
final class Recorded<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable is sound: `values` is only touched while `lock` is held. NSLock, not
    // Synchronization.Mutex, so that ThreadSanitizer sees the locking.
    private let lock = NSLock()
    private var values: [Value] = []

    func append(_ value: Value) {
        lock.withLock { values.append(value) }
    }

    var all: [Value] { lock.withLock { values } }
}
