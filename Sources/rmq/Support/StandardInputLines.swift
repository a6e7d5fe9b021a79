import Foundation

/// The lines of standard input, as bytes (a line need not be UTF-8), handed over in batches:
/// an `AsyncSequence` whose elements are the complete lines of one read.
///
/// A thread of its own reads standard input with read(2) in blocks of `blockSize` bytes:
/// reading a pipe or a terminal blocks, and must not block Swift's cooperative pool. Each
/// read that completes at least one line becomes one batch, so a line crosses threads with
/// thousands of others (one hand-off per block instead of one per line, which cost a futex
/// wake-up every few lines), while a line typed at a terminal or written slowly into a pipe
/// is still handed over as soon as it arrives: a read returns what is there, it does not wait
/// for a full block. The reader stays at most `window` batches ahead of the consumer, so a
/// huge input is never held in memory (about `window` × `blockSize` bytes of lines, plus the
/// one line being assembled, which is as long as the longest line).
///
/// Lines end at `\n`, which is removed, with a `\r` before it (CRLF files). A blank line is
/// an empty line, and a last line without a newline still counts. A line longer than
/// `maxLine` bytes ends the sequence with an error naming it, so a file without newlines is
/// never read whole into memory; a read error is an error, never the end of the input.
struct StandardInputLines: AsyncSequence, Sendable {
    typealias Element = [[UInt8]]

    /// 128 MiB: RabbitMQ 3's default largest message (`max_message_size`); RabbitMQ 4's is 16 MiB.
    static let defaultMaxLine = 128 * 1024 * 1024

    let window: Int
    let blockSize: Int
    let maxLine: Int
    /// Ends the sequence (after the batches already read) on SIGINT or SIGTERM.
    let stop: StopSignals?

    init(window: Int = 4, blockSize: Int = 64 * 1024, maxLine: Int = defaultMaxLine, stoppingOn stop: StopSignals? = nil) {
        precondition(window > 0 && blockSize > 0 && maxLine > 0)
        self.window = window
        self.blockSize = blockSize
        self.maxLine = maxLine
        self.stop = stop
    }

    func makeAsyncIterator() -> AsyncIterator {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [[UInt8]].self)
        let slots = DispatchSemaphore(value: window)
        // An iterator dropped early (a bad line ended the loop) must not leave the reader
        // waiting for a slot for ever: the extra signal lets it see that nobody listens.
        continuation.onTermination = { _ in slots.signal() }
        // The reader thread stays blocked in read(2) until the process exits; nobody waits for it.
        stop?.onStop { _ in continuation.finish() }
        let blockSize = self.blockSize
        let maxLine = self.maxLine
        let thread = Thread {
            Self.read(from: STDIN_FILENO, blockSize: blockSize, maxLine: maxLine) { batch in
                // Blocks this dedicated thread, never a pool thread, until the consumer catches up.
                slots.wait()
                if case .terminated = continuation.yield(batch) { return false }
                return true
            } onEnd: { error in
                continuation.finish(throwing: error)
            }
        }
        thread.name = "rmq-stdin"
        thread.start()
        return AsyncIterator(base: stream.makeAsyncIterator(), slots: slots)
    }

    /// Reads `descriptor` to its end, splitting at `\n`, and calls `deliver` with the lines
    /// completed by each read until it returns false; then `onEnd`, with the read error (or
    /// the over-long line) if any. Blocks: run it on a thread of its own.
    static func read(
        from descriptor: Int32, blockSize: Int, maxLine: Int = defaultMaxLine, deliver: ([[UInt8]]) -> Bool,
        onEnd: ((any Error)?) -> Void
    ) {
        var block = [UInt8](repeating: 0, count: blockSize)
        // The start of a line whose end is in a later block.
        var partial: [UInt8] = []
        // Lines delivered so far, to name a line that is too long.
        var delivered = 0
        func tooLong(_ offset: Int) -> CLIError {
            CLIError("line \(delivered + offset + 1) of standard input is longer than \(maxLine) bytes (--max-line)")
        }
        while true {
            let count = block.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                let code = errno
                if shouldRetry(after: code, on: descriptor, waitingFor: Int32(POLLIN)) { continue }
                onEnd(CLIError("cannot read standard input: \(String(cString: strerror(code)))"))
                return
            }
            if count == 0 { break }
            var lines = block.withUnsafeBytes { split(UnsafeRawBufferPointer(rebasing: $0[..<count]), partial: &partial) }
            for index in lines.indices where lines[index].last == UInt8(ascii: "\r") { lines[index].removeLast() }
            if let long = lines.firstIndex(where: { $0.count > maxLine }) {
                // The lines before it are published, as they would be from an earlier block.
                if long > 0 && !deliver(Array(lines[..<long])) {
                    onEnd(nil)
                    return
                }
                onEnd(tooLong(long))
                return
            }
            // One more byte than the limit may yet turn out to be a CR.
            if partial.count > maxLine + 1 {
                onEnd(tooLong(lines.count))
                return
            }
            delivered += lines.count
            if !lines.isEmpty && !deliver(lines) {
                onEnd(nil)
                return
            }
        }
        if partial.last == UInt8(ascii: "\r") { partial.removeLast() }
        if partial.count > maxLine {
            onEnd(tooLong(0))
            return
        }
        if !partial.isEmpty && !deliver([partial]) {
            onEnd(nil)
            return
        }
        onEnd(nil)
    }

    /// The lines that `bytes` completes, the first one continuing `partial`; what follows the
    /// last `\n` becomes the new `partial`.
    static func split(_ bytes: UnsafeRawBufferPointer, partial: inout [UInt8]) -> [[UInt8]] {
        guard let base = bytes.baseAddress else { return [] }
        var lines: [[UInt8]] = []
        var start = 0
        while start < bytes.count,
            let found = memchr(base + start, Int32(UInt8(ascii: "\n")), bytes.count - start)
        {
            let end = base.distance(to: UnsafeRawPointer(found))
            let piece = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            if partial.isEmpty {
                lines.append(Array(piece))
            } else {
                partial.append(contentsOf: piece)
                lines.append(partial)
                partial = []
            }
            start = end + 1
        }
        partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...]))
        return lines
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<[[UInt8]], any Error>.Iterator
        let slots: DispatchSemaphore

        mutating func next() async throws -> [[UInt8]]? {
            guard let batch = try await base.next() else { return nil }
            slots.signal()
            return batch
        }
    }
}
