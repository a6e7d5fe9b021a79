import Foundation
import RabbitMQ

/// What `rmq consume` writes: the deliveries' lines gathered in memory and written with one
/// write per batch of ready deliveries (not one per message), each flush followed by the
/// acknowledgement of every delivery it wrote, so a message is never acknowledged before
/// its line is out.
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
    /// The last delivery gathered and not yet acknowledged: its ack, with `multiple`, covers
    /// every earlier one on the channel, which were all written before it.
    private var unacknowledged: RabbitMQDelivery?
    private var progress = ProgressLine()

    init() { buffer.reserveCapacity(Self.flushThreshold + 4096) }

    deinit { writer.close() }

    var isFull: Bool { buffer.count >= Self.flushThreshold }

    /// Gathers one delivery's line; `acknowledge`: settle it after the flush that writes it.
    func append(_ line: String, for delivery: RabbitMQDelivery, acknowledge: Bool) {
        var line = line
        line.withUTF8 { buffer.append(contentsOf: $0) }
        buffer.append(UInt8(ascii: "\n"))
        if acknowledge { unacknowledged = delivery }
        progress.count += 1
    }

    /// Writes what was gathered, then acknowledges it (one `basic.ack` with `multiple`).
    /// Throws when writing fails (nothing is acknowledged then) or the channel is closed (the
    /// broker requeues the messages, which come again, marked redelivered).
    func flush() async throws {
        if !buffer.isEmpty {
            try await writer.write(buffer)
            buffer.removeAll(keepingCapacity: true)
        }
        if let delivery = unacknowledged {
            unacknowledged = nil
            try delivery.ack(multiple: true)
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
