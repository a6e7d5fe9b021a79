import Foundation
import Synchronization

/// Writes to standard output on a thread of its own: a write to a pipe whose reader is slow
/// blocks, and must not block Swift's cooperative pool.
///
/// One write at a time, and the caller awaits it: when ``write(_:)`` returns, the bytes are
/// in the file, or, when standard output is a pipe, the reader has taken them out of it:
/// write(2) returning only says the bytes are in the pipe's buffer (64 KiB on Linux), and a
/// reader may exit without reading them (`rmq consume | head -1`). Acknowledging a delivery
/// after its write relies on this. One hand-off per write, so callers gather many lines into
/// one.
final class StandardOutputWriter: Sendable {
    /// The reader went away (EPIPE, or a pipe without readers while we waited for it to
    /// drain): the bytes of that write may be lost, and nothing more can be written.
    struct ReaderGone: Error {}

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
        var status = stat()
        let isPipe = fstat(descriptor, &status) == 0 && (status.st_mode & S_IFMT) == S_IFIFO
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
                    var error = Self.writeAll(bytes, to: descriptor)
                    if error == nil && isPipe { error = Self.waitUntilDrained(descriptor) }
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

    /// Writes `bytes` and returns once they are all written (and, to a pipe, read); throws
    /// ``ReaderGone`` when the reader went away, another error when writing fails (disk
    /// full). Call it from one task at a time.
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

    /// Waits until the pipe `descriptor` writes into is empty (its reader took everything),
    /// or has no reader any more (``ReaderGone``). Linux has no event for "empty", so the wait
    /// looks at the pipe's fill (FIONREAD) and at poll(2)'s POLLERR (no reader left) with
    /// pauses growing from 50 µs to 20 ms between.
    /// A reader that keeps up drains the pipe within the first checks; a slow one (a pager
    /// waiting for its user) holds us here, as a full pipe would.
    private static func waitUntilDrained(_ descriptor: Int32) -> (any Error)? {
        var wait = timespec(tv_sec: 0, tv_nsec: 50_000)
        while true {
            var unread: Int32 = 0
            // FIONREAD on either end of a pipe: the bytes in it. A failure ends the wait.
            if ioctl(descriptor, UInt(FIONREAD), &unread) != 0 || unread <= 0 { return nil }
            var poller = pollfd(fd: descriptor, events: 0, revents: 0)
            if poll(&poller, 1, 0) > 0 && poller.revents & Int16(POLLERR) != 0 { return ReaderGone() }
            nanosleep(&wait, nil)
            wait.tv_nsec = min(wait.tv_nsec * 2, 20_000_000)
        }
    }

    /// Writes everything, across partial writes and interruptions; the error, or nil.
    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> (any Error)? {
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
                if code == EPIPE { return ReaderGone() }
                return CLIError("cannot write: \(String(cString: strerror(code)))")
            }
            return nil
        }
    }
}
