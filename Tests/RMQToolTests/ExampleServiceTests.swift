import Foundation
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Synchronization
import Testing

/// The built `rabbitmq-example` (next to the test bundle, like `rmq`), started with the test
/// broker in RABBITMQ_URL. Its standard output comes line by line as it is written, so a test
/// can wait for a line (an event) before it signals the process.
final class ExampleProcess: Sendable {
    let lines: AsyncStream<String>
    private let process: Process
    private let exit: AsyncStream<Int32>
    let errorURL: URL
    let outputURL: URL

    init(environment: [String: String]) throws {
        let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let executable = directory.appendingPathComponent("rabbitmq-example")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw TestSupportError("no rabbitmq-example at \(executable.path): build with `swift build --build-tests` first")
        }
        let process = Process()
        process.executableURL = executable
        var variables = ProcessInfo.processInfo.environment
        variables["RABBITMQ_URL"] = try TestBroker.url
        for (key, value) in environment { variables[key] = value }
        process.environment = variables

        // Standard error to a file: a pipe nobody drains could fill up and stall the process.
        errorURL = FileManager.default.temporaryDirectory.appendingPathComponent("rabbitmq-example-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errorURL)
        // Standard output to a file too, read as it grows, and to its end once the process has
        // exited. Not a pipe: its write end can be inherited by another child that the tests,
        // running in parallel, start at the same moment, and then the end of the output never
        // comes (seen: a run that exited cleanly, and a test waiting for its last line until
        // the time limit).
        let outputURL = FileManager.default.temporaryDirectory.appendingPathComponent(
            "rabbitmq-example-\(UUID().uuidString).out")
        self.outputURL = outputURL
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: outputURL)

        let exited = ExitFlag()
        lines = AsyncStream { continuation in
            let reader = Task {
                guard let handle = try? FileHandle(forReadingFrom: outputURL) else {
                    continuation.finish()
                    return
                }
                defer { try? handle.close() }
                var pending: [UInt8] = []
                while !Task.isCancelled {
                    // Asked before reading: once it has exited, this read sees all it wrote.
                    let done = exited.value.withLock { $0 }
                    let chunk = [UInt8]((try? handle.readToEnd()) ?? Data())
                    pending.append(contentsOf: chunk)
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        continuation.yield(String(decoding: pending[..<newline], as: UTF8.self))
                        pending.removeSubrange(...newline)
                    }
                    if done {
                        if !pending.isEmpty { continuation.yield(String(decoding: pending, as: UTF8.self)) }
                        break
                    }
                    if chunk.isEmpty { try? await Task.sleep(for: .milliseconds(20)) }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in reader.cancel() }
        }
        let (exit, exitContinuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { process in
            exited.value.withLock { $0 = true }
            exitContinuation.yield(process.terminationStatus)
            exitContinuation.finish()
        }
        try process.run()
        self.process = process
        self.exit = exit
    }

    /// Sends `signal` (SIGTERM or SIGINT).
    func send(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// The exit status, once it has exited.
    func status() async -> Int32? {
        for await status in exit { return status }
        return nil
    }

    /// The exit status, or nil when the process has not exited within `limit` (it is then
    /// killed, SIGKILL: a hung service may not end on SIGTERM): a hang is a failure to
    /// report, not a test that never ends.
    func status(within limit: Duration) async -> Int32? {
        await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await self.status() }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if first == nil { kill(process.processIdentifier, SIGKILL) }
            return first
        }
    }

    var errorOutput: String { (try? String(contentsOf: errorURL, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: errorURL)
        try? FileManager.default.removeItem(at: outputURL)
    }
}

/// Set once the process has exited, for the reader of its output.
private final class ExitFlag: Sendable {
    let value = Mutex(false)
}

/// The example order service, run against the test broker as a team would run it.
@Suite("rabbitmq-example order service", .timeLimit(.minutes(3)))
struct ExampleServiceTests {
    /// The counts in the summary line `orders: placed 20, quoted 20, ...`.
    static func summary(_ output: [String]) throws -> [String: Int] {
        let line = try #require(output.first { $0.hasPrefix("orders: placed ") }, "no summary in \(output)")
        var counts: [String: Int] = [:]
        for part in line.dropFirst("orders: ".count).split(separator: ", ") {
            let words = part.split(separator: " ")
            counts[String(words[0])] = Int(words[1])
        }
        return counts
    }

    /// Deletes what the example declared under `prefix`.
    static func deleteTopology(_ prefix: String, retryQueue: String = "retry.200ms") async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        for queue in [
            "\(prefix).audit", "\(prefix).audit.dead-letter", "\(prefix).pricing", "\(prefix).fulfilment",
            "\(prefix).fulfilment.dead-letter", "\(prefix).fulfilment.\(retryQueue)",
        ] {
            try await channel.queueDelete(queue)
        }
        for exchange in ["\(prefix).events", "\(prefix).events.dead-letter", "\(prefix).fulfilment"] {
            try await channel.exchangeDelete(exchange)
        }
        try await connection.close()
    }

    @Test func placesQuotesAuditsAndFulfilsEveryOrderThenPrintsItsMetrics() async throws {
        let prefix = TestBroker.uniqueName("example")
        let example = try ExampleProcess(environment: ["ORDERS_COUNT": "30", "ORDERS_PREFIX": prefix])
        var output: [String] = []
        for await line in example.lines { output.append(line) }
        let status = await example.status()
        #expect(status == 0, "stderr: \(example.errorOutput)")

        #expect(output.contains("orders: all 30 processed"))
        // Every 5th order fails its first fulfilment and succeeds on the retry.
        #expect(try Self.summary(output) == ["placed": 30, "quoted": 30, "audited": 30, "fulfilled": 30, "retried": 6])
        #expect(example.errorOutput.contains("fulfilment failed, will retry"))
        // The Prometheus exposition, with the example's own counters under Prometheus names.
        let exposition = try #require(output.firstIndex(of: "# Prometheus exposition")).advanced(by: 1)
        let metrics = Set(output[exposition...])
        for sample in [
            "orders_placed 30", "orders_quoted 30", "orders_audited 30", "orders_fulfilled 30", "orders_fulfilment_retried 6",
        ] {
            #expect(metrics.contains(sample), "\(sample) in \(output[exposition...])")
        }
        // And the connection's, from the core: per order a topic event, a price request and
        // its reply, a fulfilment; plus the 6 republished retries. The topic events and the
        // fulfilments (with their retries) go through confirm-mode channels; the audit
        // consumer, the pricing server and the fulfilment worker ack what they take.
        for sample in [
            "rabbitmq_messages_published{connection=\"order-service\"} 126",
            "rabbitmq_messages_delivered{connection=\"order-service\"} 126",
            "rabbitmq_messages_confirmed{connection=\"order-service\"} 66",
            "rabbitmq_consumer_acked{connection=\"order-service\"} 96",
            "rabbitmq_connections_open{connection=\"order-service\"} 0.0",
        ] {
            #expect(metrics.contains(sample), "\(sample) in \(output[exposition...])")
        }
        // Nothing left behind in the queues it consumes.
        for queue in ["\(prefix).audit", "\(prefix).fulfilment", "\(prefix).pricing"] {
            #expect(try await TestBroker.queueState(queue)?.messageCount == 0, "\(queue)")
        }
        try await Self.deleteTopology(prefix)
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func aSignalMidRunShutsDownCleanlyAndLosesNoEvent(signal: Int32) async throws {
        let prefix = TestBroker.uniqueName("example")
        // Far more orders than it can place before the signal: it is stopped, not finished.
        let example = try ExampleProcess(environment: [
            "ORDERS_COUNT": "1000000", "ORDERS_PREFIX": prefix, "ORDERS_METRICS": "none",
        ])
        var output: [String] = []
        var lines = example.lines.makeAsyncIterator()
        while let line = await lines.next() {
            output.append(line)
            // Busy placing orders, and the service group traps the signals already.
            if line == "orders: 200 placed" { break }
        }
        example.send(signal)
        // Bounded: a shutdown that hangs is a failure with its log, not a test that never ends
        // (killed, the process closes its standard output, which ends the lines below).
        let status = await example.status(within: .seconds(120))
        #expect(status == 0, "a clean exit; stderr: \(example.errorOutput)")
        while let line = await lines.next() { output.append(line) }

        let counts = try Self.summary(output)
        print("rabbitmq-example after signal \(signal): \(counts.sorted { $0.key < $1.key })")
        let placed = try #require(counts["placed"])
        #expect(placed < 1_000_000)
        #expect(!output.contains { $0.hasPrefix("orders: all") })
        // The order in hand when the signal came was finished: quoted and placed agree.
        #expect(counts["quoted"] == placed)
        // Every order event placed was audited or still waits in the audit queue.
        let audited = try #require(counts["audited"])
        try await eventually("audited \(audited) + waiting in the audit queue == placed \(placed)") {
            audited + Int(try await TestBroker.queueState("\(prefix).audit")?.messageCount ?? 0) == placed
        }
        try await Self.deleteTopology(prefix)
    }

    /// When one service fails (here the audit log: its queue is deleted, so the broker
    /// cancels its consumer), the group cancels the others and the process exits non-zero
    /// with the error, even while the publisher waits for its orders to be processed (their
    /// fulfilment retries are an hour away, so it would wait that long).
    @Test func aFailingServiceStopsTheProcessWithAnError() async throws {
        let prefix = TestBroker.uniqueName("example")
        let example = try ExampleProcess(environment: [
            "ORDERS_COUNT": "100", "ORDERS_PREFIX": prefix, "ORDERS_METRICS": "none", "ORDERS_FAIL_EVERY": "1",
            "ORDERS_RETRY_DELAY_MS": "3600000",
        ])
        var lines = example.lines.makeAsyncIterator()
        while let line = await lines.next() {
            // Every order placed: the publisher now waits for the fulfilments.
            if line == "orders: 100 placed" { break }
        }
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        try await channel.queueDelete("\(prefix).audit")
        try await connection.close()
        let status = await example.status(within: .seconds(60))
        #expect(status != nil, "still running a minute after a service failed")
        #expect(status != 0, "stderr: \(example.errorOutput)")
        #expect(example.errorOutput.contains("error"), "stderr: \(example.errorOutput)")
        try await Self.deleteTopology(prefix, retryQueue: "retry.3600s")
    }

    /// An order of an earlier run, as the example publishes it.
    struct LeftoverOrder: Codable, Sendable {
        var id: String
        var sku: String
        var quantity: Int
        var totalCents: Int
    }

    /// Orders an earlier run left in the durable queues (a run stopped mid-way, or another
    /// copy on the same prefix) are taken off the queues but not counted: the run finishes
    /// when its own orders are processed, and its summary counts exactly those.
    @Test func leftoversOfAnEarlierRunAreHandledButNotCounted() async throws {
        let prefix = TestBroker.uniqueName("example")
        let connection = try await TestBroker.connect()
        let events = try await RabbitMQTopicExchange.declare("\(prefix).events", on: connection)
        _ = try await events.subscribe(LeftoverOrder.self, queue: "\(prefix).audit", patterns: ["orders.#"])
        let fulfilment = try await RabbitMQRetryQueue.declare(
            "\(prefix).fulfilment", on: connection, configuration: .init(delays: [.milliseconds(200)]))
        // Ids such as this run's would be if runs were not told apart.
        for n in 1...8 {
            let order = LeftoverOrder(id: "order-\(n)", sku: "SKU-\(n % 7)", quantity: 1, totalCents: 100)
            try await events.publish(RabbitMQEnvelope(type: "orders.order.placed", data: order))
            try await fulfilment.publish(RabbitMQEnvelope(type: "orders.order.fulfil", data: order))
        }
        try await connection.close()

        let example = try ExampleProcess(environment: ["ORDERS_COUNT": "20", "ORDERS_PREFIX": prefix, "ORDERS_METRICS": "none"])
        var output: [String] = []
        for await line in example.lines { output.append(line) }
        let status = await example.status()
        #expect(status == 0, "stderr: \(example.errorOutput)")
        #expect(output.contains("orders: all 20 processed"))
        #expect(try Self.summary(output) == ["placed": 20, "quoted": 20, "audited": 20, "fulfilled": 20, "retried": 4])
        // The leftovers were taken off the queues too.
        for queue in ["\(prefix).audit", "\(prefix).fulfilment"] {
            #expect(try await TestBroker.queueState(queue)?.messageCount == 0, "\(queue)")
        }
        try await Self.deleteTopology(prefix)
    }
}
