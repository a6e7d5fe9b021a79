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
            acknowledged after its line is written. With standard error on a terminal and \
            standard output not, a run longer than a second shows a running count there. \
            Exits 0 after --count messages or --idle-timeout seconds without one (counted \
            from when consuming starts). Keeps consuming across broker \
            restarts and node failover (reconnecting through the --uri list); a message whose \
            ack was lost then comes again, marked redelivered.
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

    @Option(help: "Exit after this many messages.")
    var count: Int?

    @Option(
        name: .customLong("idle-timeout"),
        help: ArgumentHelp("Exit after this many seconds without a message.", valueName: "seconds"))
    var idleTimeout: Double?

    @Flag(
        name: .customLong("auto-ack"),
        help: "Let the broker consider messages acknowledged on sending (those in flight when rmq exits are lost).")
    var autoAck = false

    func run() async throws {
        let plan = try ConsumePlan(command: self)
        let configuration = try connection.configuration(name: "rmq consume")
        let progress = ConsumeProgress()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await plan.consume(configuration: configuration, progress: progress) }
            if let idleTimeout {
                group.addTask { try await progress.waitUntilIdle(for: .milliseconds(Int64(idleTimeout * 1000))) }
            }
            // Either enough messages, or idle for long enough: both are a normal end.
            try await group.next()
            group.cancelAll()
        }
    }
}

/// Counts deliveries and knows when the last one arrived, for `--count` and `--idle-timeout`.
final class ConsumeProgress: Sendable {
    private let received = Atomic<Int>(0)
    /// When the consumer started or the last delivery arrived; nil before the first consumer
    /// is registered (connecting, declaring and binding do not count as idle time).
    private let lastActivity = LockedValue<ContinuousClock.Instant?>(nil)

    var count: Int { received.load(ordering: .relaxed) }

    /// The consumer is registered: the idle time counts from now (if it was not counting yet).
    func consuming() {
        lastActivity.withLock { $0 = $0 ?? .now }
    }

    func record() -> Int {
        lastActivity.withLock { $0 = .now }
        return received.add(1, ordering: .relaxed).newValue
    }

    /// Returns once `idle` has passed without a delivery, counted from the first consumer.
    func waitUntilIdle(for idle: Duration) async throws {
        while true {
            guard let last = lastActivity.withLock({ $0 }) else {
                // Not consuming yet: look again later (never earlier than `idle` after it starts).
                try await Task.sleep(for: idle)
                continue
            }
            let deadline = last + idle
            if ContinuousClock.now >= deadline { return }
            try await Task.sleep(until: deadline)
        }
    }
}
