import Glibc

/// A value behind a `pthread_mutex_t`.
///
/// Used instead of `Synchronization.Mutex` because on Linux that one is built on raw futex
/// calls, which ThreadSanitizer cannot see: every access under it is reported as a race,
/// drowning real ones. With a pthread mutex, `swift test --sanitize=thread` checks our
/// locking for real. Same shape as `Mutex.withLock`. The value and the mutex live in one
/// heap object (the mutex tail-allocated), so a lock costs one allocation, not two.
/// `package`: the patterns module and `rmq` use it too.
// @unchecked Sendable: the only stored property is a reference to a Buffer, whose header
// (`Value`) is only read or written inside `withLock`, between pthread_mutex_lock and
// pthread_mutex_unlock on the tail-allocated mutex, which the buffer owns for its whole life;
// no reference to the value escapes the closure (it is passed `inout`), and `Value` is
// itself Sendable, so what a closure copies out may cross threads. (ManagedBuffer is not
// Sendable, so the buffer class cannot state this itself.)
package struct LockedValue<Value: Sendable>: @unchecked Sendable {
    private let buffer: Buffer

    package init(_ value: Value) {
        buffer = unsafeDowncast(Buffer.create(minimumCapacity: 1) { _ in value }, to: Buffer.self)
        buffer.withUnsafeMutablePointerToElements { mutex in
            mutex.initialize(to: pthread_mutex_t())
            let status = pthread_mutex_init(mutex, nil)
            precondition(status == 0, "pthread_mutex_init failed: \(status)")
        }
    }

    @inline(__always)
    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        try buffer.withLock(body)
    }

    private final class Buffer: ManagedBuffer<Value, pthread_mutex_t> {
        deinit {
            withUnsafeMutablePointerToElements { mutex in
                pthread_mutex_destroy(mutex)
                mutex.deinitialize(count: 1)
            }
        }

        @inline(__always)
        func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
            try withUnsafeMutablePointers { (value, mutex) throws(Failure) -> Result in
                pthread_mutex_lock(mutex)
                defer { pthread_mutex_unlock(mutex) }
                return try body(&value.pointee)
            }
        }
    }
}
