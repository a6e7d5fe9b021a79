import Foundation

/// The lines of standard input, as bytes (a line need not be UTF-8), as an `AsyncSequence`
/// read on a thread of its own: reading a pipe or a terminal blocks, and must not block
/// Swift's cooperative pool. The reader stays at most `window` lines ahead of the consumer,
/// so a huge input is never held in memory.
struct StandardInputLines: AsyncSequence, Sendable {
    typealias Element = [UInt8]

    let window: Int

    init(window: Int = 256) { self.window = window }

    func makeAsyncIterator() -> AsyncIterator {
        let (stream, continuation) = AsyncStream.makeStream(of: [UInt8].self)
        let slots = DispatchSemaphore(value: window)
        let thread = Thread {
            // Our own FILE for descriptor 0: the C global `stdin` is shared mutable state to Swift.
            let input = fdopen(STDIN_FILENO, "r")
            var buffer: UnsafeMutablePointer<CChar>? = nil
            var capacity = 0
            while let input {
                let length = getline(&buffer, &capacity, input)
                guard length >= 0, let buffer else { break }
                var line = UnsafeRawBufferPointer(start: buffer, count: length).map { $0 }
                if line.last == UInt8(ascii: "\n") { line.removeLast() }
                // Blocks this dedicated thread, never a pool thread, until the consumer catches up.
                slots.wait()
                continuation.yield(line)
            }
            free(buffer)
            continuation.finish()
        }
        thread.name = "rmq-stdin"
        thread.start()
        return AsyncIterator(base: stream.makeAsyncIterator(), slots: slots)
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<[UInt8]>.Iterator
        let slots: DispatchSemaphore

        mutating func next() async -> [UInt8]? {
            guard let line = await base.next() else { return nil }
            slots.signal()
            return line
        }
    }
}
