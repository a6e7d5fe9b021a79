import ArgumentParser
import Foundation
import RabbitMQ
import Synchronization

/// `rmq consume`: deliveries as JSON lines, acknowledged once written.
struct ConsumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume",
        abstract: "Write each delivery as one JSON object per line.",
        discussion: """
            Each line is {"exchange", "routingKey", "redelivered", "properties": {...}, "body"}; \
            properties holds only the set ones; the body is a string when it is UTF-8, else \
            {"base64": ...}. Header values that JSON lacks are tagged: {"timestamp": seconds}, \
            {"bytes": base64}, {"decimal": "12.34"}; void is null. Lines are written in batches \
            (the deliveries ready at once, before waiting for more); each delivery is \
            acknowledged after its line is written (to a pipe: once its reader has read the \
            batch, so a reader that exits loses at most the one batch it read). With \
            standard error on a terminal and standard output not, a run longer than a second \
            shows a running count there. Exits 0 after --count lines, one per delivery (the \
            prefetch is then at most what is left, so no message is delivered to be put back; \
            a message delivered again after a lost connection counts again; exits 1 instead \
            when the connection is lost before the broker took the last acks) or --idle-timeout \
            seconds without one (counted from when consuming starts, not while the connection \
            is down; an outage that long exits 1). A closed pipe exits 141 and SIGINT/SIGTERM \
            130/143, after acknowledging what was written; the rest goes back to the queue. \
            Keeps consuming across broker restarts and node failover (reconnecting through \
            the --uri list); a message whose ack was lost then comes again, marked redelivered.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The queue.")
    var queue: String

    @Flag(help: "Declare the queue first.")
    var declare = false

    @Flag(help: "With --declare: a durable queue (the default; kept for scripts that say so).")
    var durable = false

    @Flag(help: "With --declare: a transient queue (RabbitMQ 4.3 refuses one by default).")
    var transient = false

    @Flag(help: "With --declare: a quorum queue (durable, replicated).")
    var quorum = false

    @Option(
        name: .customLong("bind"),
        help: ArgumentHelp("Bind the queue to EXCHANGE with KEY (repeatable).", valueName: "exchange:key"))
    var bindings: [String] = []

    @Option(help: "Most unacknowledged deliveries at once.")
    var prefetch: UInt16 = 100

    @Option(help: "Exit after this many deliveries (lines).")
    var count: Int?

    @Option(
        name: .customLong("idle-timeout"),
        help: ArgumentHelp("Exit after this many seconds without a message.", valueName: "seconds"))
    var idleTimeout: Double?

    @Flag(
        name: .customLong("auto-ack"),
        help: "Let the broker consider messages acknowledged on sending (those in flight when rmq exits are lost; not with --count).")
    var autoAck = false

    func validate() throws {
        if autoAck && count != nil {
            // Prefetch does not bound an auto-ack consumer: the broker would send (and forget)
            // messages past the count, which would be lost.
            throw ValidationError("--auto-ack cannot go with --count: the broker would send, and drop, messages past the count")
        }
        if count != nil && prefetch == 0 {
            // A prefetch of 0 is no limit at all: the broker would send the whole queue.
            throw ValidationError("--prefetch 0 (no limit) cannot go with --count: the broker would send messages past the count")
        }
        if let idleTimeout { _ = try Seconds.duration(idleTimeout, option: "--idle-timeout") }
    }

    /// How a run ended, for the exit status.
    private enum End: Sendable {
        case consumed(ConsumePlan.Summary)
        case idle
        case signal(Int32)
    }

    func run() async throws {
        let plan = try ConsumePlan(command: self)
        let configuration = try connection.configuration(name: "rmq consume")
        let progress = ConsumeProgress()
        let idle = try idleTimeout.map { try Seconds.duration($0, option: "--idle-timeout") }
        let stop = StopSignals()
        var signal: Int32?
        var summary: ConsumePlan.Summary?
        try await withThrowingTaskGroup(of: End?.self) { group in
            group.addTask { .consumed(try await plan.consume(configuration: configuration, progress: progress)) }
            if let idle {
                group.addTask {
                    do {
                        try await progress.waitUntilIdle(for: idle)
                    } catch is CancellationError {
                        return nil
                    }
                    return .idle
                }
            }
            group.addTask { await stop.wait().map { .signal($0) } }
            // Enough messages, idle for long enough, or a signal: each ends the run. The
            // consumer, cancelled, writes what it gathered and acknowledges what it wrote.
            var first = true
            while let end = try await group.next() {
                if first { group.cancelAll() }
                first = false
                switch end {
                case .consumed(let done): summary = done
                case .signal(let number): signal = number
                case .idle, nil: break
                }
            }
        }
        if let signal {
            throw CLIError(
                "stopped by \(StopSignals.name(of: signal)): \(summary?.linesWritten ?? 0) lines written, "
                    + "\(summary?.acknowledged ?? 0) messages acknowledged; the others go back to the queue",
                exitStatus: StopSignals.exitStatus(for: signal))
        }
    }
}

/// Counts deliveries and knows when the last one arrived, for `--count` and `--idle-timeout`.
///
/// Time while the connection is down is not idle time (the queue may be filling): the idle
/// clock starts again when consuming does. An outage as long as the idle timeout ends the
/// run with an error instead, never as a normal end.
final class ConsumeProgress: Sendable {
    private struct Activity {
        /// When the consumer started or the last delivery arrived; nil while not consuming
        /// (connecting, declaring and binding do not count as idle time).
        var last: ContinuousClock.Instant?
        /// When the connection was lost, while it is.
        var downSince: ContinuousClock.Instant?
        /// --count is reached: what is left is writing and acknowledging, never idle time.
        var finishing = false
    }

    private let received = Atomic<Int>(0)
    private let activity = LockedValue(Activity())

    var count: Int { received.load(ordering: .relaxed) }

    /// The consumer is registered: the idle time counts from now.
    func consuming() {
        activity.withLock { $0 = Activity(last: .now, downSince: nil) }
    }

    /// The connection was lost: idle time stops counting, outage time starts.
    func disconnected() {
        activity.withLock { activity in
            if activity.downSince == nil { activity = Activity(last: nil, downSince: .now) }
        }
    }

    /// --count is reached: the idle timeout no longer applies (the run ends by itself once
    /// the last lines are read and acknowledged, however long the reader takes).
    func countReached() {
        activity.withLock { $0.finishing = true }
    }

    func record() -> Int {
        activity.withLock { $0.last = .now }
        return received.add(1, ordering: .relaxed).newValue
    }

    /// Deliveries recorded and then dropped unwritten (their channel was lost): they come
    /// again, and count then.
    func forget(_ deliveries: Int) {
        received.subtract(deliveries, ordering: .relaxed)
    }

    /// Returns once `idle` has passed without a delivery, counted from the first consumer;
    /// throws once the connection has been down for `idle`.
    func waitUntilIdle(for idle: Duration) async throws {
        while true {
            let now = ContinuousClock.now
            let current = activity.withLock { $0 }
            if current.finishing {
                try await Task.sleep(for: idle)
            } else if let down = current.downSince {
                if now >= down + idle {
                    throw CLIError(
                        "the connection has been down for \(idle) (the --idle-timeout); stopping with "
                            + "\(count) messages consumed: the queue may not be empty")
                }
                try await Task.sleep(until: down + idle)
            } else if let last = current.last {
                if now >= last + idle { return }
                try await Task.sleep(until: last + idle)
            } else {
                // Not consuming yet: look again later (never earlier than `idle` after it starts).
                try await Task.sleep(for: idle)
            }
        }
    }
}
