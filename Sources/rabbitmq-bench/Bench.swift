import ArgumentParser
import Glibc
import Metrics
import Prometheus

/// `rabbitmq-bench`: the Swift layer against raw rabbitmq-c, on the same broker, in one run.
/// The entry point is ``BenchMain``.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rabbitmq-bench",
        abstract: "Measures the RabbitMQ Swift layer against the raw rabbitmq-c baseline on the same broker.",
        discussion: """
            The broker comes from RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672/), the TLS \
            scenarios' from RABBITMQ_TLS_URL (amqps://...?cacertfile=CA.pem; without it they are left out). Each scenario \
            runs once per implementation as a warm-up, then for --rounds rounds alternating C and Swift. \
            Scenarios: \(Scenario.Kind.allCases.map(\.rawValue).joined(separator: ", ")).
            """,
        subcommands: [Run.self, RPCServer.self, Fill.self, Soak.self, PublishLines.self, Idle.self],
        defaultSubcommand: Run.self)
}

extension Bench {
    struct Run: AsyncParsableCommand, Sendable {
        static let configuration = CommandConfiguration(
            commandName: "run", abstract: "Runs the benchmark and prints the table (the default).")

        @Option(name: .long, help: "Only this scenario (repeat or comma-separate for several).")
        var scenario: [String] = []

        @Option(name: .long, help: "Messages per run, for every selected scenario.")
        var messages: Int?

        @Option(name: .long, help: "Body size in bytes, for every selected scenario.")
        var size: Int?

        @Option(name: .long, help: "Measured rounds, each running C and Swift once (default 5; --smoke: 1).")
        var rounds: Int?

        @Flag(name: .long, help: "Print JSON instead of the table.")
        var json = false

        @Flag(name: .long, help: "Tiny counts and one round: checks that everything works (CI), measures nothing.")
        var smoke = false

        @Option(name: .long, help: "Give up on a broker run after this many seconds (broker-free runs cannot hang).")
        var maxSeconds: Double = 120

        @Option(name: .long, help: "Messages per warm-up run (default: a fifth of --messages, at least 100).")
        var warmUp: Int?

        @Option(
            name: .long,
            help: "Run only this implementation (c or swift; repeatable): for profilers, not for ratios.")
        var implementation: [String] = []

        @Option(
            name: .long,
            help: ArgumentHelp(
                "Where the Swift loop runs: task (a nonisolated task), main (the main actor), actor (an actor of "
                    + "the application's), connection (a task preferring its connection's executor); repeatable or "
                    + "comma-separated; default all four.",
                valueName: "caller"))
        var caller: [String] = []

        @Option(
            name: .long,
            help: ArgumentHelp(
                "The metrics backend the Swift connections report to: none (swift-metrics' no-op default) or "
                    + "prometheus (swift-prometheus's factory, bootstrapped before the first connection).",
                valueName: "backend"))
        var metrics: String = "none"

        /// The callers chosen (all by default), in a fixed order.
        var callers: [Caller] {
            let named = caller.flatMap { $0.split(separator: ",").map(String.init) }.compactMap(Caller.init(name:))
            return named.isEmpty ? Caller.allCases : Caller.allCases.filter(named.contains)
        }

        func validate() throws {
            if let messages, messages < 1 { throw ValidationError("--messages must be at least 1") }
            if let size, size < 0 || size > 16 * 1024 * 1024 { throw ValidationError("--size must be 0...16 MiB") }
            if let rounds, rounds < 1 || rounds > 100 { throw ValidationError("--rounds must be 1...100") }
            if maxSeconds <= 0 || maxSeconds > 3600 { throw ValidationError("--max-seconds must be 0...3600") }
            if let warmUp, warmUp < 0 { throw ValidationError("--warm-up must not be negative") }
            if metrics != "none" && metrics != "prometheus" {
                throw ValidationError("--metrics must be none or prometheus, not '\(metrics)'")
            }
            for name in implementation where Implementation(name: name) == nil {
                throw ValidationError("--implementation must be c or swift, not '\(name)'")
            }
            for name in caller.flatMap({ $0.split(separator: ",").map(String.init) }) where Caller(name: name) == nil {
                throw ValidationError("--caller must be task, main, actor or connection, not '\(name)'")
            }
        }

        func run() async throws {
            #if DEBUG
            let warning = """
                ******************************************************************
                *  rabbitmq-bench is a DEBUG build: the numbers are meaningless.  *
                *  Build with -c release (scripts/bench.sh does).                 *
                ******************************************************************
                """
            log(warning)
            if !json { print(warning) }
            #endif
            // What a real backend costs: every Swift connection counts into a registry
            // (the C baseline has no metrics).
            if metrics == "prometheus" { MetricsSystem.bootstrap(PrometheusMetricsFactory()) }
            let endpoint = try BenchEndpoint(uri: brokerURL())
            let tlsEndpoint = try tlsBrokerURL().map { try BenchEndpoint(uri: $0) }
            let scenarios = try Scenario.selection(
                names: scenario, size: size, messages: messages, smoke: smoke, tls: tlsEndpoint != nil)
            let rounds = self.rounds ?? (smoke ? 1 : 5)
            let runner = Runner(
                c: CBaseline(endpoint: endpoint), swift: SwiftScenarios(endpoint: endpoint),
                tls: tlsEndpoint.map { (CBaseline(endpoint: $0), SwiftScenarios(endpoint: $0)) }, maxSeconds: maxSeconds)
            let machine = MachineInfo.current()
            log("rabbitmq-bench: \(scenarios.count) scenarios, \(rounds) rounds, broker \(endpoint.host):\(endpoint.port)")

            var server: RPCServerProcess?
            if scenarios.contains(where: { $0.kind.usesEchoServer }) {
                server = try await RPCServerProcess.start(
                    queue: runner.rpcQueue, maxSeconds: maxSeconds * Double(rounds + 1) * 2 + 60, c: runner.c)
            }
            let chosen = implementation.compactMap(Implementation.init(name:))
            let implementations = chosen.isEmpty ? Implementation.allCases : Implementation.allCases.filter(chosen.contains)
            var reports: [ScenarioReport] = []
            var failure: (any Error)?
            do {
                for scenario in scenarios {
                    reports.append(
                        contentsOf: try await measure(
                            scenario, rounds: rounds, implementations: implementations, runner: runner))
                }
            } catch {
                failure = error
            }
            if let server {
                await server.stop()
                try? await runner.c.deleteQueue(runner.rpcQueue)
            }
            await runner.cleanUp(scenarios.map(\.kind))
            if let failure { throw failure }

            let report = Report(machine: machine, rounds: rounds, scenarios: reports)
            print(json ? report.json() : report.table())
            if reports.contains(where: { !$0.problems.isEmpty }) { throw ExitCode(2) }
        }

        /// Runs one scenario: per round, C once and Swift once from each caller, in an order
        /// that alternates between rounds. One report per caller, each pairing its Swift runs
        /// with the same round's C run. A broker-free scenario's loop never awaits, so where it
        /// is called from changes nothing: it runs once, from a task, as caller "any".
        private func measure(
            _ scenario: Scenario, rounds: Int, implementations: [Implementation], runner: Runner
        ) async throws -> [ScenarioReport] {
            let implementations = implementations.filter { $0 == .swift || scenario.kind.hasCBaseline }
            let callers: [Caller?] = scenario.kind.touchesBroker ? callers : [nil]
            var reports = callers.map { ScenarioReport(scenario: scenario, caller: $0) }
            if implementations.isEmpty {
                log("\(scenario.label): skipped (no C equivalent, and Swift was not chosen)")
                return []
            }
            // Each run: (implementation, caller) with the index of the caller's report.
            var runs: [(Implementation, Caller?, Int)] = []
            for implementation in implementations {
                if implementation == .c {
                    runs.append((.c, nil, 0))
                } else {
                    for (index, caller) in callers.enumerated() { runs.append((.swift, caller, index)) }
                }
            }
            let warmUp = self.warmUp ?? min(scenario.messages, max(scenario.messages / 5, 100))
            if warmUp > 0 {
                log("\(scenario.label): warm-up (\(warmUp) messages each)")
                for (implementation, caller, _) in runs {
                    _ = try await runner.run(scenario, implementation, caller: caller ?? .task, count: warmUp)
                }
            }
            for round in 0..<rounds {
                // Alternate who goes first, so drift in the broker's state favours none.
                let order = round % 2 == 0 ? runs : runs.reversed()
                for (implementation, caller, index) in order {
                    let result = try await runner.run(scenario, implementation, caller: caller ?? .task, count: scenario.messages)
                    let who = implementation == .c ? "c" : "swift (\(caller?.rawValue ?? "any"))"
                    if let problem = try await runner.problem(scenario, result, count: scenario.messages) {
                        for report in reports.indices where implementation == .c || report == index {
                            reports[report].problems.append("\(who) round \(round + 1): \(problem)")
                        }
                    }
                    if implementation == .c {
                        for report in reports.indices { reports[report].c.append(result) }
                    } else {
                        reports[index].swift.append(result)
                    }
                    log(
                        "\(scenario.label): round \(round + 1) \(who): "
                            + "\(format(result.messagesPerSecond, digits: 0)) msg/s, "
                            + "\(format(result.cpuNanosecondsPerMessage / 1000, digits: 2)) µs CPU/msg"
                            + (result.p50.map { ", p50 \(format(Double($0) / 1000, digits: 1)) µs" } ?? ""))
                }
            }
            return reports
        }
    }

    /// The echo server of the `rpc` and `rpc-patterns` scenarios; the benchmark starts it in a
    /// child process.
    struct RPCServer: AsyncParsableCommand, Sendable {
        static let configuration = CommandConfiguration(
            commandName: "rpc-server", abstract: "Runs the C echo server of the rpc scenarios (started by run).",
            shouldDisplay: false)

        @Option(name: .long, help: "The request queue.")
        var queue: String

        @Option(name: .long, help: "Stop after this many seconds.")
        var maxSeconds: Double = 600

        func run() async throws {
            let c = CBaseline(endpoint: try BenchEndpoint(uri: brokerURL()))
            try await c.rpcServer(queue: queue, maxSeconds: maxSeconds)
        }
    }

    /// Fills a queue for the consume scenario; the benchmark runs it in a child process.
    struct Fill: AsyncParsableCommand, Sendable {
        static let configuration = CommandConfiguration(
            commandName: "fill", abstract: "Publishes messages to a queue with the C baseline (started by run).",
            shouldDisplay: false)

        @Option(name: .long, help: "The queue.")
        var queue: String

        @Option(name: .long, help: "Body size in bytes.")
        var size: Int

        @Option(name: .long, help: "How many messages.")
        var messages: Int

        @Flag(name: .long, help: "Fill the queue on RABBITMQ_TLS_URL's broker.")
        var tls = false

        func run() async throws {
            guard let url = tls ? tlsBrokerURL() : brokerURL() else { throw BenchError("--tls needs RABBITMQ_TLS_URL") }
            let c = CBaseline(endpoint: try BenchEndpoint(uri: url))
            try await c.fill(queue, size: size, count: messages)
        }
    }
}

/// `RABBITMQ_URL`, or the broker a default RabbitMQ installation listens on.
func brokerURL() -> String {
    Glibc.getenv("RABBITMQ_URL").map { String(cString: $0) } ?? "amqp://guest:guest@127.0.0.1:5672/"
}

/// `RABBITMQ_TLS_URL` (an `amqps://` URL, with `cacertfile` for verification), if set: the
/// endpoint of the TLS scenarios.
func tlsBrokerURL() -> String? {
    guard let url = Glibc.getenv("RABBITMQ_TLS_URL").map({ String(cString: $0) }), !url.isEmpty else { return nil }
    return url
}

/// Progress goes to standard error, so standard output holds only the table or the JSON.
func log(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
