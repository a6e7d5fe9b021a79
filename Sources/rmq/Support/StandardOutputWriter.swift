import Foundation
import Synchronization

/// Writes to standard output on a thread of its own: a write to a pipe whose reader is slow
/// blocks, and must not block Swift's cooperative pool.
///
/// One write at a time, and the caller awaits it: when ``write(_:)`` returns, the bytes are
/// with the kernel (in the pipe or the file), which is what acknowledging a delivery after
/// it relies on. One hand-off per write, so callers gather many lines into one.
final class StandardOutputWriter: Sendable {
    private struct Job: Sendable {
        var bytes: [UInt8]
        var done: CheckedContinuation<Void, any Error>
    }

    private struct State: Sendable {
        var job: Job?
        var closed = false
    }

    private let state = Mutex(State())
    /// Signalled once per job and once on close.
    private let wake = DispatchSemaphore(value: 0)

    init(descriptor: Int32 = STDOUT_FILENO) {
        // The thread keeps the writer alive until close().
        let thread = Thread { [self] in
            // Bounded by close(): each turn takes the one job or sees the end.
            while true {
                wake.wait()
                let taken = self.state.withLock { state in
                    defer { state.job = nil }
                    return (state.job, state.closed)
                }
                var job = taken.0
                let closed = taken.1
                if let done = job?.done, let bytes = job?.bytes {
                    let error = Self.writeAll(bytes, to: descriptor)
                    // The caller reuses its buffer once resumed: let go of the bytes first,
                    // or its next append finds them shared and copies them.
                    job = nil
                    _ = consume bytes
                    if let error { done.resume(throwing: error) } else { done.resume() }
                }
                if closed { return }
            }
        }
        thread.name = "rmq-stdout"
        thread.start()
    }

    /// Writes `bytes` and returns once they are all written; throws when writing fails
    /// (standard output closed, disk full). Call it from one task at a time.
    func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let accepted = state.withLock { state in
                precondition(state.job == nil, "one write at a time")
                if state.closed { return false }
                state.job = Job(bytes: bytes, done: continuation)
                return true
            }
            if accepted {
                wake.signal()
            } else {
                continuation.resume(throwing: CLIError("cannot write: standard output was closed"))
            }
        }
    }

    /// Ends the thread (after the write in progress, if any).
    func close() {
        state.withLock { $0.closed = true }
        wake.signal()
    }

    /// Writes everything, across partial writes and interruptions; the error, or nil.
    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> CLIError? {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written >= 0 {
                    offset += written
                    continue
                }
                let code = errno
                if shouldRetry(after: code, on: descriptor, waitingFor: Int32(POLLOUT)) { continue }
                return CLIError("cannot write: \(String(cString: strerror(code)))")
            }
            return nil
        }
    }
}
