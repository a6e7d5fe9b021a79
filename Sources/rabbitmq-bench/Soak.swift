import ArgumentParser
import Glibc
import Logging
import RabbitMQ
import Synchronization

extension Bench {
    /// `rabbitmq-bench soak`: publishes with confirms and consumes with manual acks through
    /// periodic faults, and keeps its own account of every message: confirmed, consumed,
    /// duplicated, and at the end what the broker still holds. Lost (confirmed, never
    /// consumed, not in the queue) must be 0. Prints a line every `--report-every` seconds
    /// and a summary; exits non-zero when something was lost.
    struct Soak: AsyncParsableCommand, Sendable {
        static let configuration = CommandConfiguration(
            commandName: "soak",
            abstract: "Publishes and consumes through periodic faults and checks that nothing confirmed is lost.")

        @Option(name: .long, help: "Stop after this many confirmed messages.")
        var messages = 1_000_000

        @Option(name: .long, help: "Stop after this many minutes, whatever was published.")
        var minutes = 30.0

        @Option(name: .long, help: "Seconds between two faults.")
        var faultEvery = 20.0

        @Option(name: .long, help: "Seconds between two progress lines.")
        var reportEvery = 60.0

        @Option(name: .long, help: "Publishes a second (default: --messages spread over --minutes; 0: as fast as it goes).")
        var rate: Double?

        @Option(name: .long, help: "scripts/broker.sh, for faults of the single broker (close_connection, stop_app/start_app, kill -9).")
        var brokerCtl: String?

        @Option(name: .long, help: "scripts/cluster.sh: run on the three-node cluster (RABBITMQ_CLUSTER_URLS) and also kill nodes.")
        var clusterCtl: String?

        func validate() throws {
            if messages < 1 { throw ValidationError("--messages must be at least 1") }
            if minutes <= 0 || faultEvery <= 0 || reportEvery <= 0 { throw ValidationError("durations must be positive") }
            if let rate, rate < 0 { throw ValidationError("--rate must not be negative") }
            if brokerCtl == nil && clusterCtl == nil { throw ValidationError("give --broker-ctl or --cluster-ctl: the soak injects faults") }
        }

        func run() async throws {
            let soak = try SoakRun(settings: self)
            let report = try await soak.run()
            print(report.summary)
            if report.lost > 0 || report.publisherFailed { throw ExitCode(1) }
        }
    }
}

/// One soak: the workload, the faults, the account.
final class SoakRun: Sendable {
    struct Report {
        var lost: Int
        var publisherFailed: Bool
        var summary: String
    }

    /// Per message id: confirmed? how often consumed?
    private struct Account {
        var published = 0
        var confirmed: [Bool] = []
        var confirmedCount = 0
        var notAcked = 0
        var seen: [UInt8] = []
        var distinct = 0
        var duplicates = 0
        var recoveries = 0
        var faults: [String] = []
    }

    private let settings: Bench.Soak
    private let account = Mutex(Account())
    private let stopPublishing = Atomic<Bool>(false)
    private let stopConsuming = Atomic<Bool>(false)
    private let publisherFailed = Atomic<Bool>(false)
    private let publisherDone = Atomic<Bool>(false)
    private let queue: String
    private let configuration: RabbitMQConfiguration
    private let clustered: Bool

    init(settings: Bench.Soak) throws {
        self.settings = settings
        queue = "soak-\(getpid())"
        clustered = settings.clusterCtl != nil
        var configuration: RabbitMQConfiguration
        if clustered {
            guard let urls = Glibc.getenv("RABBITMQ_CLUSTER_URLS").map({ String(cString: $0) }) else {
                throw BenchError("--cluster-ctl needs RABBITMQ_CLUSTER_URLS (eval \"$(scripts/cluster.sh env)\")")
            }
            configuration = try RabbitMQConfiguration(uris: urls.split(separator: ",").map(String.init))
        } else {
            configuration = try RabbitMQConfiguration(uri: brokerURL())
        }
        configuration.heartbeat = .seconds(5)
        configuration.recovery.initialDelay = .milliseconds(200)
        configuration.recovery.maxDelay = .seconds(2)
        configuration.recovery.publishWaitTimeout = .seconds(120)
        configuration.logger = Logger(label: "soak", factory: { _ in SwiftLogNoOpLogHandler() })
        self.configuration = configuration
    }

    private func connect(_ role: String) async throws -> RabbitMQConnection {
        var configuration = configuration
        configuration.connectionName = "soak-\(role)-\(getpid())"
        return try await RabbitMQConnection.connect(configuration: configuration)
    }

    func run() async throws -> Report {
        let publisher = try await connect("pub")
        let consumer = try await connect("con")
        let setup = try await publisher.openChannel()
        try await setup.queueDeclare(queue, durable: true, arguments: clustered ? ["x-queue-type": "quorum"] : [:])
        try await setup.close()
        let started = ContinuousClock.now
        let deadline = started + .seconds(settings.minutes * 60)
        let baseline = ProcessFigures.current()
        log("soak: \(settings.messages) messages or \(settings.minutes) min, a fault every \(settings.faultEvery) s, queue \(queue)")

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await self.publish(on: publisher)
                } catch {
                    log("soak: the publisher failed: \(error)")
                    self.publisherFailed.store(true, ordering: .relaxed)
                    throw error
                }
            }
            group.addTask { try await self.consume(on: consumer) }
            group.addTask { await self.countRecoveries(of: publisher) }
            group.addTask { await self.countRecoveries(of: consumer) }
            group.addTask { try await self.injectFaults(until: deadline) }
            group.addTask { try await self.report(every: self.settings.reportEvery, since: started, baseline: baseline) }
            // Stop publishing at the message count or the deadline.
            while ContinuousClock.now < deadline, !publisherFailed.load(ordering: .relaxed),
                account.withLock({ $0.confirmedCount }) < settings.messages
            {
                try await Task.sleep(for: .milliseconds(200))
            }
            stopPublishing.store(true, ordering: .relaxed)
            // The publisher settles what it has in flight (bounded: a publish waits at most
            // the recovery's publish timeout).
            let settle = ContinuousClock.now + .seconds(180)
            while ContinuousClock.now < settle, !publisherDone.load(ordering: .relaxed) {
                try await Task.sleep(for: .milliseconds(100))
            }
            // Let the consumer catch up with everything confirmed (bounded).
            let catchUp = ContinuousClock.now + .seconds(180)
            while ContinuousClock.now < catchUp, !caughtUp() { try await Task.sleep(for: .milliseconds(200)) }
            stopConsuming.store(true, ordering: .relaxed)
            group.cancelAll()
            while let next = await group.nextResult() {
                if case .failure(let error) = next, !(error is CancellationError) { log("soak: a task ended with \(error)") }
            }
        }

        // The broker's account: what is still in the queue.
        let drain = try await connect("drain")
        let channel = try await drain.openChannel()
        var held = Set<Int>()
        while let delivery = try await channel.get(queue: queue, autoAck: true) {
            if let id = Int(delivery.properties.messageID ?? "") { held.insert(id) }
        }
        try await channel.queueDelete(queue)
        try await drain.close()
        try? await publisher.close()
        try? await consumer.close()

        let final = ProcessFigures.current()
        let totals = self.account.withLock { $0 }
        var lost: [Int] = []
        for id in 0..<totals.confirmed.count where totals.confirmed[id] && totals.seen[id] == 0 && !held.contains(id) {
            lost.append(id)
        }
        let minutes = Double((ContinuousClock.now - started).components.seconds) / 60
        let summary = """
            soak: \(tenths(minutes)) min, \(totals.faults.count) faults (\(Self.tally(totals.faults))), \
            \(totals.recoveries) recoveries; published \(totals.published), confirmed \(totals.confirmedCount), \
            not acked \(totals.notAcked), consumed \(totals.distinct) distinct, duplicates \(totals.duplicates), \
            still queued \(held.count), lost \(lost.count)\(lost.isEmpty ? "" : " \(lost.prefix(20))"); \
            RSS \(baseline.rssMiB) -> \(final.rssMiB) MiB, threads \(baseline.threads) -> \(final.threads), \
            descriptors \(baseline.descriptors) -> \(final.descriptors)
            """
        return Report(lost: lost.count, publisherFailed: publisherFailed.load(ordering: .relaxed), summary: summary)
    }

    private static func tally(_ faults: [String]) -> String {
        var counts: [String: Int] = [:]
        for fault in faults { counts[fault, default: 0] += 1 }
        return counts.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    }

    private func caughtUp() -> Bool {
        account.withLock { account in
            for id in 0..<account.confirmed.count where account.confirmed[id] && account.seen[id] == 0 { return false }
            return true
        }
    }

    // MARK: Workload

    private func publish(on connection: RabbitMQConnection) async throws {
        defer { publisherDone.store(true, ordering: .relaxed) }
        var channel = try await connection.openChannel()
        try await channel.confirmSelect(maxOutstanding: 1000)
        var pending: [(Int, RabbitMQConfirmation)] = []
        pending.reserveCapacity(2048)
        let body = [UInt8](repeating: 0x61, count: 64)
        // Paced against the clock (message n is due at start + n / rate), so that an outage
        // is followed by a catch-up burst, as a real producer's backlog would be.
        let rate = settings.rate ?? Double(settings.messages) / (settings.minutes * 60)
        let start = ContinuousClock.now
        var id = 0
        var consecutiveNacks = 0
        while !stopPublishing.load(ordering: .relaxed) {
            account.withLock { account in
                account.published += 1
                account.confirmed.append(false)
                account.seen.append(0)
            }
            do {
                pending.append(
                    (id, try await channel.publishWithConfirm(
                        body, routingKey: queue, properties: RabbitMQProperties(deliveryMode: .persistent, messageID: "\(id)"))))
            } catch let error as RabbitMQError where error.scope == .channel {
                // A quorum queue's election can leave a channel refusing: a new one works.
                channel = try await connection.openChannel()
                try await channel.confirmSelect(maxOutstanding: 1000)
            } catch let error as RabbitMQError where error.isRetriable {
                // The connection stayed down longer than a publish waits: count it, go on.
                account.withLock { $0.notAcked += 1 }
            }
            id += 1
            if rate > 0, id % 50 == 0 {
                let due = start + .seconds(Double(id) / rate)
                if due > .now { try await Task.sleep(until: due) }
            }
            // Settle in batches, in publish order (the broker confirms in order per channel).
            if pending.count >= 500 {
                for (id, confirmation) in pending {
                    let outcome: RabbitMQPublishOutcome? = try? await confirmation.outcome()
                    record(id, outcome, consecutiveNacks: &consecutiveNacks)
                }
                pending.removeAll(keepingCapacity: true)
                if consecutiveNacks >= 20 {
                    try? await channel.close()
                    channel = try await connection.openChannel()
                    try await channel.confirmSelect(maxOutstanding: 1000)
                    consecutiveNacks = 0
                }
            }
        }
        for (id, confirmation) in pending {
            let outcome: RabbitMQPublishOutcome? = try? await confirmation.outcome()
            record(id, outcome, consecutiveNacks: &consecutiveNacks)
        }
    }

    private func record(_ id: Int, _ outcome: RabbitMQPublishOutcome?, consecutiveNacks: inout Int) {
        account.withLock { account in
            if outcome == .acked {
                account.confirmed[id] = true
                account.confirmedCount += 1
            } else {
                account.notAcked += 1
            }
        }
        consecutiveNacks = outcome == .acked ? 0 : consecutiveNacks + 1
    }

    private func consume(on connection: RabbitMQConnection) async throws {
        while !stopConsuming.load(ordering: .relaxed) {
            do {
                try await consumeOnce(on: connection)
                if !stopConsuming.load(ordering: .relaxed) {
                    log("soak: the consumer ended; consuming again")
                    try await Task.sleep(for: .milliseconds(500))
                }
            } catch is CancellationError {
                return
            } catch {
                // A consumer the broker cancelled (a quorum queue moving) or a channel it
                // closed: consume again on a new channel.
                log("soak: consumer ended with \(error); consuming again")
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    private func consumeOnce(on connection: RabbitMQConnection) async throws {
        let channel = try await connection.openChannel()
        defer { Task { try? await channel.close() } }
        try await channel.qos(prefetchCount: 500)
        let consumer = try await channel.consume(queue: queue)
        var sinceAck = 0
        for try await delivery in consumer {
            if let id = Int(delivery.properties.messageID ?? "") {
                account.withLock { account in
                    guard id < account.seen.count else { return }
                    if account.seen[id] == 0 { account.distinct += 1 } else { account.duplicates += 1 }
                    account.seen[id] &+= 1
                }
            }
            sinceAck += 1
            if sinceAck >= 50 {
                try? delivery.ack(multiple: true)
                sinceAck = 0
            }
            if stopConsuming.load(ordering: .relaxed) { return }
        }
    }

    private func countRecoveries(of connection: RabbitMQConnection) async {
        for await event in connection.events() {
            if case .recovered = event { account.withLock { $0.recoveries += 1 } }
        }
    }

    // MARK: Faults

    private func injectFaults(until deadline: ContinuousClock.Instant) async throws {
        var kinds = ["close_connection", "stop_app", "kill -9"]
        if clustered { kinds.append("node kill") }
        var index = 0
        while ContinuousClock.now < deadline, !stopPublishing.load(ordering: .relaxed) {
            try await Task.sleep(for: .seconds(settings.faultEvery))
            if stopPublishing.load(ordering: .relaxed) { return }
            let kind = kinds[index % kinds.count]
            index += 1
            log("soak: fault \(index): \(kind)")
            do {
                try await inject(kind, round: index)
                account.withLock { $0.faults.append(kind) }
            } catch {
                log("soak: fault \(kind) failed: \(error)")
            }
        }
    }

    private func inject(_ kind: String, round: Int) async throws {
        if let cluster = settings.clusterCtl {
            let node = String(1 + round % 3)
            switch kind {
            case "close_connection":
                for node in ["1", "2", "3"] { _ = try? await command(cluster, ["ctl", node, "close_all_connections", "soak fault"]) }
            case "stop_app":
                try await command(cluster, ["ctl", node, "stop_app"])
                try await command(cluster, ["ctl", node, "start_app"])
            case "kill -9", "node kill":
                try await command(cluster, ["kill-node", node])
                try await command(cluster, ["start-node", node])
            default:
                break
            }
            return
        }
        guard let broker = settings.brokerCtl else { return }
        switch kind {
        case "close_connection":
            try await command(broker, ["ctl", "close_all_connections", "soak fault"])
        case "stop_app":
            try await command(broker, ["ctl", "stop_app"])
            try await command(broker, ["ctl", "start_app"])
        case "kill -9":
            try await command(broker, ["kill"])
            try await command(broker, ["start"])
        default:
            break
        }
    }

    /// Runs a control script to its end (polling, so no cooperative thread blocks).
    @discardableResult
    private func command(_ path: String, _ arguments: [String]) async throws -> Int32 {
        var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) }
        argv.append(nil)
        defer { for pointer in argv { free(pointer) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard spawned == 0 else { throw BenchError("cannot run \(path): posix_spawn \(spawned)") }
        let child = ChildProcess(pid: pid)
        let status = try await child.wait(seconds: 180)
        guard status == 0 else { throw BenchError("\(path) \(arguments.first ?? "") exited \(status)") }
        return status
    }

    // MARK: Reporting

    private func report(every seconds: Double, since started: ContinuousClock.Instant, baseline: ProcessFigures) async throws {
        while true {
            try await Task.sleep(for: .seconds(seconds))
            let figures = ProcessFigures.current()
            let account = self.account.withLock { $0 }
            let minutes = Double((ContinuousClock.now - started).components.seconds) / 60
            log("""
                soak \(tenths(minutes)) min: confirmed \(account.confirmedCount), consumed \(account.distinct), \
                duplicates \(account.duplicates), awaiting consumption \(account.confirmedCount - min(account.confirmedCount, account.distinct)), \
                faults \(account.faults.count), recoveries \(account.recoveries); RSS \(figures.rssMiB) MiB (\(baseline.rssMiB) at start), \
                threads \(figures.threads), descriptors \(figures.descriptors)
                """)
        }
    }
}

/// Threads, descriptors and resident memory of this process, from /proc.
struct ProcessFigures {
    var rssMiB: Int
    var threads: Int
    var descriptors: Int

    static func current() -> ProcessFigures {
        func count(_ path: String) -> Int {
            guard let directory = opendir(path) else { return 0 }
            defer { closedir(directory) }
            var n = 0
            while readdir(directory) != nil { n += 1 }
            return max(0, n - 2)
        }
        // statm: size resident shared ... in pages.
        var rss = 0
        if let file = fopen("/proc/self/statm", "r") {
            var line = [CChar](repeating: 0, count: 256)
            if fgets(&line, Int32(line.count), file) != nil {
                let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
                if fields.count > 1, let pages = Int(fields[1]) { rss = pages * Int(sysconf(Int32(_SC_PAGESIZE))) / (1024 * 1024) }
            }
            fclose(file)
        }
        return ProcessFigures(rssMiB: rss, threads: count("/proc/self/task"), descriptors: count("/proc/self/fd"))
    }
}

/// `12.3` (no Foundation here).
private func tenths(_ value: Double) -> String {
    let scaled = Int((value * 10).rounded())
    return "\(scaled / 10).\(scaled % 10)"
}
