import Foundation

/// A value that several tasks share, behind a lock.
///
/// Not `Synchronization.Mutex`: on Linux that is futex-based and invisible to ThreadSanitizer,
/// which then reports every guarded access as a race (the core's `LockedValue` exists for the
/// same reason). `NSLock` is a pthread mutex, which TSan understands.
package final class LockedState<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable is sound: `value` is private and only read or written inside
    // `withLock`, between `lock()` and `unlock()`, so no two threads ever access it at once,
    // and `Value` is Sendable, so what leaves the lock may cross threads.
    private let lock = NSLock()
    private var value: Value

    package init(_ value: Value) {
        self.value = value
    }

    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
