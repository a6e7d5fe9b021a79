import ArgumentParser
import Glibc
import RabbitMQ

extension Bench {
    /// `rabbitmq-bench idle`: what many open, idle connections cost the process that holds
    /// them (issue 10, item 6). Each connection owns an I/O thread, so the figures are per
    /// thread as much as per connection: threads, resident memory, wake-ups (context
    /// switches of every thread) and CPU time, over a window in which nothing is sent but
    /// heartbeats. `scripts/idle-bench.sh` builds it in release mode and runs it.
    struct Idle: AsyncParsableCommand, Sendable {
        static let configuration = CommandConfiguration(
            commandName: "idle",
            abstract: "Opens many connections, leaves them idle, and reports threads, memory, wake-ups and CPU.",
            shouldDisplay: false)

        @Option(name: .long, help: "Connections to open.")
        var connections = 1000

        // Several heartbeat half-intervals (15 s at the default 30 s heartbeat): connections
        // opened together beat in phase, and a short window's count depends on where it
        // falls between their beats.
        @Option(name: .long, help: "Seconds the idle window lasts (a few heartbeat half-intervals).")
        var seconds = 60.0

        @Option(name: .long, help: "Seconds to wait, once all are open, before the window starts.")
        var settle = 2.0

        @Option(name: .long, help: "Give up opening (and keep what is open) after this many seconds.")
        var connectSeconds = 180.0

        @Option(name: .long, help: "Connections being opened (or closed) at once.")
        var parallel = 8

        @Option(
            name: .long,
            help: "Open and close all the connections this many times first, as recoveries would (glibc then serves their buffers from its arenas).")
        var churn = 0

        @Option(name: .long, help: "The broker's OS pid (scripts/broker.sh pid): its CPU over the window too.")
        var brokerPid: Int32?

        @Flag(name: .long, help: "Print JSON instead of the table.")
        var json = false

        func validate() throws {
            if connections < 1 || connections > 20_000 { throw ValidationError("--connections must be 1...20000") }
            if seconds <= 0 || seconds > 3600 { throw ValidationError("--seconds must be 0...3600") }
            if settle < 0 || settle > 600 { throw ValidationError("--settle must be 0...600") }
            if connectSeconds <= 0 || connectSeconds > 3600 { throw ValidationError("--connect-seconds must be 0...3600") }
            if parallel < 1 || parallel > 256 { throw ValidationError("--parallel must be 1...256") }
            if churn < 0 || churn > 100 { throw ValidationError("--churn must be 0...100") }
        }

        func run() async throws {
            #if DEBUG
            log("rabbitmq-bench idle: a DEBUG build; CPU figures mean little (scripts/idle-bench.sh builds release).")
            #endif
            let endpoint = try BenchEndpoint(uri: brokerURL())
            let report = try await IdleRun(settings: self, configuration: endpoint.configuration).run()
            print(json ? report.json() : report.table())
            if report.opened < connections { throw ExitCode(2) }
        }
    }
}

/// One run of `rabbitmq-bench idle`: open, sample, wait, sample, close.
struct IdleRun {
    let settings: Bench.Idle
    let configuration: RabbitMQConfiguration

    func run() async throws -> IdleReport {
        for round in 0..<settings.churn {
            let deadline = ContinuousClock.now + .seconds(settings.connectSeconds)
            let (connections, failure) = await openConnections(settings.connections, before: deadline)
            _ = await closeConnections(connections)
            log("rabbitmq-bench idle: churn round \(round + 1): opened and closed \(connections.count)")
            if let failure { throw BenchError("churn round \(round + 1): \(failure)") }
        }
        guard let empty = ProcessSample.take() else { throw BenchError("cannot read /proc/self") }
        // The first connection pays one-time costs (libraries, the runtime's pools): the
        // per-connection figures are the growth from one connection to all of them.
        let first = try await RabbitMQConnection.connect(configuration: configuration)
        let heartbeat = first.negotiatedHeartbeat
        guard let one = ProcessSample.take() else { throw BenchError("cannot read /proc/self") }
        log("rabbitmq-bench idle: opening \(settings.connections) connections, \(settings.parallel) at a time")
        let deadline = ContinuousClock.now + .seconds(settings.connectSeconds)
        let started = ContinuousClock.now
        let (rest, failure) = await openConnections(settings.connections - 1, before: deadline)
        var connections = [first] + rest
        let openSeconds = seconds(ContinuousClock.now - started)
        if let failure { log("rabbitmq-bench idle: stopped opening after \(connections.count): \(failure)") }
        log("rabbitmq-bench idle: \(connections.count) open in \(format(openSeconds, digits: 1)) s; idle for \(settings.seconds) s")

        try await Task.sleep(for: .seconds(settings.settle))
        let brokerStart = settings.brokerPid.flatMap { ProcessSample.take(pid: $0) }
        guard let start = ProcessSample.take() else { throw BenchError("cannot read /proc/self") }
        // The window's CPU time and length are read apart from the samples, which read two
        // procfs files per thread: their own cost stays out.
        let cpuStart = ProcessSample.ownCPUNanoseconds()
        let windowStart = ContinuousClock.now
        try await Task.sleep(for: .seconds(settings.seconds))
        let cpuEnd = ProcessSample.ownCPUNanoseconds()
        let window = seconds(ContinuousClock.now - windowStart)
        guard let end = ProcessSample.take() else { throw BenchError("cannot read /proc/self") }
        let brokerEnd = settings.brokerPid.flatMap { ProcessSample.take(pid: $0) }

        let opened = connections.count
        let closeFailures = await closeConnections(connections)
        connections.removeAll()
        let closed = ProcessSample.take()

        return IdleReport(
            requested: settings.connections, churn: settings.churn, opened: opened, failure: failure, heartbeatSeconds: heartbeat,
            openSeconds: openSeconds, empty: empty, one: one, start: start, end: end, window: window,
            cpuPerSecond: Double(cpuEnd - cpuStart) / window,
            brokerCPU: brokerStart.flatMap { brokerStart in
                brokerEnd.map { Double($0.cpuNanoseconds - brokerStart.cpuNanoseconds) / seconds($0.instant - brokerStart.instant) }
            },
            closeFailures: closeFailures, threadsAfterClose: closed?.threads)
    }

    /// Opens `count` connections, `parallel` at a time; stops launching at the first failure
    /// or at the deadline (those under way finish: each is bounded by the connect and
    /// handshake timeouts).
    private func openConnections(
        _ count: Int, before deadline: ContinuousClock.Instant
    ) async -> ([RabbitMQConnection], String?) {
        await withTaskGroup(of: Result<RabbitMQConnection, any Error>.self) { group in
            let configuration = self.configuration
            var launched = 0
            var opened: [RabbitMQConnection] = []
            var failure: String?
            func launchMore(_ inFlight: Int) -> Int {
                var inFlight = inFlight
                while launched < count, inFlight < settings.parallel, failure == nil {
                    guard ContinuousClock.now < deadline else {
                        failure = "--connect-seconds (\(settings.connectSeconds) s) passed"
                        break
                    }
                    group.addTask {
                        do {
                            return .success(try await RabbitMQConnection.connect(configuration: configuration))
                        } catch {
                            return .failure(error)
                        }
                    }
                    launched += 1
                    inFlight += 1
                }
                return inFlight
            }
            var inFlight = launchMore(0)
            while let result = await group.next() {
                inFlight -= 1
                switch result {
                case .success(let connection):
                    opened.append(connection)
                    if opened.count % 100 == 0 { log("rabbitmq-bench idle: \(opened.count + 1) open") }
                case .failure(let error):
                    if failure == nil { failure = "\(error)" }
                }
                inFlight = launchMore(inFlight)
            }
            return (opened, failure)
        }
    }

    /// Closes every connection, `parallel` at a time; returns how many failed to close.
    private func closeConnections(_ connections: [RabbitMQConnection]) async -> Int {
        await withTaskGroup(of: Bool.self) { group in
            var next = 0
            var failures = 0
            while next < connections.count, next < settings.parallel {
                let connection = connections[next]
                group.addTask { (try? await connection.close()) != nil }
                next += 1
            }
            while let closed = await group.next() {
                if !closed { failures += 1 }
                if next < connections.count {
                    let connection = connections[next]
                    group.addTask { (try? await connection.close()) != nil }
                    next += 1
                }
            }
            return failures
        }
    }
}

private func seconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) + Double(attoseconds) / 1e18
}

/// The figures of one idle run, as a table or JSON.
struct IdleReport {
    var requested: Int
    /// Rounds of opening and closing them all before the measured one.
    var churn: Int
    var opened: Int
    var failure: String?
    /// The heartbeat interval the broker and the first connection agreed on (0: off).
    var heartbeatSeconds: Int
    var openSeconds: Double
    /// Before any connection, with one, and the window's two ends with all of them.
    var empty: ProcessSample
    var one: ProcessSample
    var start: ProcessSample
    var end: ProcessSample
    /// The broker's CPU nanoseconds per second over the window, when its pid was given.
    /// The window's length in seconds, and this process's CPU nanoseconds per second in it.
    var window: Double
    var cpuPerSecond: Double
    var brokerCPU: Double?
    var closeFailures: Int
    var threadsAfterClose: Int?

    /// Connections beyond the first: the per-connection growth is measured over these.
    var added: Int { max(opened - 1, 1) }
    var threadsPerConnection: Double { Double(start.threads - one.threads) / Double(added) }
    var residentKiBPerConnection: Double { Double(start.residentKiB - one.residentKiB) / Double(added) }
    var virtualKiBPerConnection: Double { Double(start.virtualKiB - one.virtualKiB) / Double(added) }
    var wakeUpsPerSecond: Double { Double(end.contextSwitches(since: start).all) / window }
    var ioWakeUpsPerSecond: Double { Double(end.contextSwitches(since: start).io) / window }

    func table() -> String {
        let n = Double(opened)
        var lines = [
            "Idle cost of \(opened) connections (\(requested) requested) in one process: heartbeat \(heartbeatSeconds) s "
                + "(negotiated), opened in \(format(openSeconds, digits: 1)) s, "
                + "window \(format(window, digits: 1)) s"
                + (churn > 0 ? ", after \(churn) rounds of opening and closing them all" : "") + ". Per connection: growth from 1 to \(opened) connections "
                + "(threads, memory); window figures divided by \(opened).",
            "",
            "| figure | process | per connection |",
            "|---|---:|---:|",
            "| threads | \(start.threads) (1 connection: \(one.threads), none: \(empty.threads)) "
                + "| \(format(threadsPerConnection, digits: 2)) |",
            "| resident (RSS) | \(format(Double(start.residentKiB) / 1024, digits: 1)) MiB "
                + "(1 connection: \(format(Double(one.residentKiB) / 1024, digits: 1)) MiB) "
                + "| \(format(residentKiBPerConnection, digits: 1)) KiB |",
            "| address space (VmSize) | \(format(Double(start.virtualKiB) / 1024, digits: 0)) MiB "
                + "| \(format(virtualKiBPerConnection / 1024, digits: 2)) MiB |",
            "| wake-ups/s (context switches, all threads) | \(format(wakeUpsPerSecond, digits: 1)) "
                + "(I/O threads: \(format(ioWakeUpsPerSecond, digits: 1))) | \(format(wakeUpsPerSecond / n, digits: 3)) |",
            "| CPU (user + system) | \(format(cpuPerSecond / 1e6, digits: 2)) ms/s "
                + "| \(format(cpuPerSecond / n / 1e3, digits: 2)) µs/s |",
        ]
        if let brokerCPU {
            lines.append(
                "| broker CPU | \(format(brokerCPU / 1e6, digits: 2)) ms/s | \(format(brokerCPU / n / 1e3, digits: 2)) µs/s |")
        }
        if let failure { lines.append("\nStopped opening early: \(failure)") }
        if closeFailures > 0 { lines.append("\n\(closeFailures) connections failed to close.") }
        if let threadsAfterClose { lines.append("\nThreads after closing all: \(threadsAfterClose).") }
        return lines.joined(separator: "\n")
    }

    func json() -> String {
        var fields: [(String, String)] = [
            ("requested", "\(requested)"), ("churn", "\(churn)"), ("opened", "\(opened)"),
            ("heartbeat_seconds", "\(heartbeatSeconds)"),
            ("open_seconds", format(openSeconds, digits: 3)), ("window_seconds", format(window, digits: 3)),
            ("threads", "\(start.threads)"), ("threads_one_connection", "\(one.threads)"),
            ("threads_no_connection", "\(empty.threads)"),
            ("threads_per_connection", format(threadsPerConnection, digits: 3)),
            ("rss_kib", "\(start.residentKiB)"), ("rss_kib_one_connection", "\(one.residentKiB)"),
            ("rss_kib_per_connection", format(residentKiBPerConnection, digits: 2)),
            ("vsz_kib", "\(start.virtualKiB)"), ("vsz_kib_per_connection", format(virtualKiBPerConnection, digits: 1)),
            ("wakeups_per_second", format(wakeUpsPerSecond, digits: 2)),
            ("io_thread_wakeups_per_second", format(ioWakeUpsPerSecond, digits: 2)),
            ("cpu_ms_per_second", format(cpuPerSecond / 1e6, digits: 3)),
            ("close_failures", "\(closeFailures)"),
        ]
        if let brokerCPU { fields.append(("broker_cpu_ms_per_second", format(brokerCPU / 1e6, digits: 3))) }
        if let threadsAfterClose { fields.append(("threads_after_close", "\(threadsAfterClose)")) }
        if let failure { fields.append(("failure", jsonString(failure))) }
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }

    private func jsonString(_ text: String) -> String { text.jsonQuoted }
}
