import Foundation
import RabbitMQ

/// What `rmq consume` writes: the deliveries' lines gathered in memory and written with one
/// write per batch of ready deliveries (not one per message), each flush followed by the
/// acknowledgement of deliveries it wrote, so a message is never acknowledged before its line
/// is out: in the file, or taken out of the pipe by its reader (``StandardOutputWriter``).
///
/// The bound, for a pipe: only one batch (at most the prefetch count) is ever in the pipe,
/// and it is acknowledged once the reader has read all of it. A reader that reads lines and
/// then drops them (`head -1` reads a block and prints one line) can lose at most that batch;
/// a reader that goes away before reading all of it loses nothing (the batch goes back to
/// the queue, and the lines it did read come again, marked redelivered).
///
/// The caller flushes before it waits for more deliveries (``RabbitMQConsumer/AsyncIterator``
/// has none in hand), when ``isFull``, and at the end. A manual-ack consumer cannot stall on
/// its own unacknowledged deliveries: they are flushed, and acknowledged, before it waits.
/// Used by one task (not Sendable); its writer thread ends with it.
final class DeliveryOutput {
    /// A flush once this much is gathered, even with more deliveries ready (auto-ack has no
    /// prefetch bounding a batch).
    static let flushThreshold = 64 * 1024

    private let writer = StandardOutputWriter()
    private var buffer: [UInt8] = []
    /// Lines in `buffer`.
    private var bufferedLines = 0
    /// Deliveries gathered in `buffer`, not written yet (manual acknowledgement only).
    private var gathered: [RabbitMQDelivery] = []
    /// Deliveries written, not acknowledged yet (held back by `flush(acknowledgingUpTo:)`),
    /// oldest first, all on the current channel.
    private var written: [RabbitMQDelivery] = []
    /// Acknowledged on the current channel: the ordinal of the next one is this + 1.
    private var acknowledgedOnChannel = 0
    private var progress = ProgressLine()

    /// Lines written for the whole run (in a pipe: read by its reader).
    private(set) var linesWritten = 0
    /// Deliveries acknowledged for the whole run.
    private(set) var acknowledged = 0
    /// Deliveries gathered or written on the current channel and not acknowledged.
    var unacknowledged: Int { gathered.count + written.count }

    init() { buffer.reserveCapacity(Self.flushThreshold + 4096) }

    deinit { writer.close() }

    var isFull: Bool { buffer.count >= Self.flushThreshold }

    /// A new channel: deliveries of the old one that were not acknowledged cannot be any
    /// more (the broker has requeued them).
    func startChannel() {
        assert(buffer.isEmpty, "lines of the old channel left unwritten")
        gathered = []
        written = []
        acknowledgedOnChannel = 0
    }

    /// The lines gathered and not written, dropped with their deliveries (whose channel is
    /// gone: the broker has requeued them, and they come again); how many.
    func dropUnwritten() -> Int {
        let dropped = bufferedLines
        buffer.removeAll(keepingCapacity: true)
        bufferedLines = 0
        gathered.removeAll(keepingCapacity: true)
        progress.count -= dropped
        return dropped
    }

    /// Gathers one delivery's line; `acknowledge`: settle it after the flush that writes it.
    func append(_ line: String, for delivery: RabbitMQDelivery, acknowledge: Bool) {
        var line = line
        line.withUTF8 { buffer.append(contentsOf: $0) }
        buffer.append(UInt8(ascii: "\n"))
        if acknowledge { gathered.append(delivery) }
        bufferedLines += 1
        progress.count += 1
    }

    /// Writes what was gathered, then acknowledges what was written (one `basic.ack` with
    /// `multiple`), but no further than the `limit`-th delivery of this channel (nil: all).
    /// Throws when writing fails (``StandardOutputWriter/ReaderGone``: nothing of this batch
    /// is acknowledged then) or the channel is closed (the broker requeues the messages,
    /// which come again, marked redelivered).
    func flush(acknowledgingUpTo limit: Int? = nil) async throws {
        if !buffer.isEmpty {
            try await writer.write(buffer)
            linesWritten += bufferedLines
            bufferedLines = 0
            buffer.removeAll(keepingCapacity: true)
        }
        written += gathered
        gathered.removeAll(keepingCapacity: true)
        let allowed = limit.map { max(0, $0 - acknowledgedOnChannel) } ?? written.count
        let settling = min(allowed, written.count)
        if settling > 0 {
            try written[settling - 1].ack(multiple: true)
            written.removeFirst(settling)
            acknowledgedOnChannel += settling
            acknowledged += settling
        }
        progress.update()
    }

    /// Clears the progress line before another line goes to standard error.
    func interruptProgress() { progress.clear() }

    /// The end: the progress line, if shown, becomes the final count.
    func finish() { progress.finish() }
}

/// "N messages" on standard error, rewritten in place at most once a second, once a run has
/// lasted a second. Only when standard error is a terminal and standard output is not: on
/// one terminal the lines themselves show progress, and a progress line would garble them;
/// a script reading standard error gets nothing it did not ask for.
struct ProgressLine {
    var count = 0
    private let enabled = isatty(STDERR_FILENO) == 1 && isatty(STDOUT_FILENO) == 0
    private var next = ContinuousClock.now + .seconds(1)
    private var shown = false

    mutating func update() {
        guard enabled else { return }
        let now = ContinuousClock.now
        guard now >= next else { return }
        next = now + .seconds(1)
        shown = true
        Self.write("\r\u{1B}[Krmq: \(count) messages")
    }

    mutating func clear() {
        guard shown else { return }
        shown = false
        Self.write("\r\u{1B}[K")
    }

    mutating func finish() {
        guard shown else { return }
        shown = false
        Self.write("\r\u{1B}[Krmq: \(count) messages\n")
    }

    /// A few bytes to a terminal: written directly (a full terminal is the user's to clear).
    private static func write(_ text: String) {
        var text = text
        text.withUTF8 { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
