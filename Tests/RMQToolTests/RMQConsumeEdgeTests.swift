import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// `rmq consume` at the edges (issue 13): a reader that goes away, signals, counts and
/// outages. Each test says what it failed on before the fix.
@Suite("rmq consume: edges", .timeLimit(.minutes(3)))
struct RMQConsumeEdgeTests {
    /// A durable queue holding `count` confirmed messages "m-1"..."m-count".
    static func filledQueue(_ prefix: String, count: Int) async throws -> (RabbitMQConnection, RabbitMQChannel, String) {
        let (connection, channel, queue) = try await RMQToolTests.declareQueue(prefix)
        try await channel.confirmSelect()
        var pending: [RabbitMQConfirmation] = []
        for number in 1...count {
            pending.append(try await channel.publishWithConfirm(Array("m-\(number)".utf8), routingKey: queue))
        }
        for confirmation in pending { #expect(try await confirmation.outcome() == .acked) }
        return (connection, channel, queue)
    }

    /// Ready and unacknowledged messages and consumers of `queue`, as the broker counts them.
    static func counts(_ queue: String) async throws -> (ready: Int, unacknowledged: Int, consumers: Int)? {
        let listing = try await TestBroker.ctl(
            "list_queues", "--no-table-headers", "--silent", "name", "messages_ready", "messages_unacknowledged", "consumers")
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            guard fields.count == 4, fields[0] == queue, let ready = Int(fields[1]), let unacked = Int(fields[2]),
                let consumers = Int(fields[3])
            else { continue }
            return (ready, unacked, consumers)
        }
        return nil
    }

    /// The ready count once nobody consumes `queue` any more (what rmq left unacknowledged
    /// is back in the queue).
    static func settledDepth(_ queue: String) async throws -> Int {
        var depth = -1
        try await eventually(timeout: .seconds(60), "\(queue) to have no consumer and nothing unacknowledged") {
            guard let counts = try await counts(queue), counts.consumers == 0, counts.unacknowledged == 0 else { return false }
            depth = counts.ready
            return true
        }
        return depth
    }

    /// The number before `word` in `text` ("42 messages acknowledged" -> 42 for "messages acknowledged").
    static func number(before word: String, in text: String) -> Int? {
        guard let range = text.range(of: " \(word)") else { return nil }
        return Int(text[..<range.lowerBound].split(separator: " ").last ?? "")
    }

    /// Before: a reader that took one line of a batch and went away lost the rest of the
    /// batch (and every batch that fit in the pipe): rmq acknowledged once write(2) returned.
    /// Now a batch is acknowledged once the reader has read all of it.
    @Test func consumeAcknowledgesNothingTheReaderDidNotRead() async throws {
        let (connection, channel, queue) = try await Self.filledQueue("cli-reader-gone", count: 500)
        let rmq = try RunningRMQ(["consume", "--queue", queue, "--prefetch", "10"])
        let first = try await rmq.readOneLine()
        #expect(first?.contains("\"m-1\"") == true, "\(first ?? "nil")")
        // rmq has written more than the one line we took (the rest of its batch, or the next).
        try await eventually(timeout: .seconds(60), "rmq to write past the first line") { rmq.unreadBytes > 0 }
        rmq.closeOutput()
        let status = await rmq.status()
        #expect(status == 141, "exit status as for SIGPIPE: \(rmq.errorOutput)")
        let depth = try await Self.settledDepth(queue)
        #expect(500 - depth <= 1, "acknowledged only what the reader read (one line): depth \(depth)")
        let reported = Self.number(before: "messages acknowledged", in: rmq.errorOutput)
        #expect(reported == 500 - depth, "\(rmq.errorOutput)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// `rmq consume | head -1`: head reads a block and prints one line; what it read and
    /// dropped is the most that is lost (one batch, at most the prefetch), and rmq says how
    /// many it acknowledged; the queue holds the rest.
    @Test func consumeIntoHeadLosesAtMostOneBatchAndSaysSo() async throws {
        let (connection, channel, queue) = try await Self.filledQueue("cli-head", count: 500)
        let result = try await RMQTool.runShell(
            #""$RMQ" consume --queue "$QUEUE" --prefetch 10 | head -1; echo "status ${PIPESTATUS[0]}""#,
            environment: ["QUEUE": queue])
        let lines = result.output.split(separator: "\n")
        #expect(lines.count == 2 && lines.last == "status 141", "\(result)")
        let acknowledged = try #require(Self.number(before: "messages acknowledged", in: result.errorOutput), "\(result)")
        #expect(acknowledged <= 10, "one batch at most: \(result)")
        #expect(try await Self.settledDepth(queue) == 500 - acknowledged, "nothing lost beyond what rmq reported")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: `--count 5` kept the default prefetch (100), so the broker sent every message
    /// of the queue, and those past the count came back marked redelivered.
    @Test(arguments: [["--count", "5"], ["--count", "7", "--prefetch", "3"]])
    func consumeWithACountTakesNoMoreThanItNeeds(options: [String]) async throws {
        let (connection, channel, queue) = try await Self.filledQueue("cli-count", count: 50)
        let counted = try await RMQTool.run(["consume", "--queue", queue] + options)
        #expect(counted.status == 0, "\(counted)")
        let taken = Int(options[1])!
        #expect(try counted.jsonLines().count == taken)
        let rest = try await RMQTool.run(["consume", "--queue", queue, "--count", "\(50 - taken)"])
        let redelivered = try rest.jsonLines().filter { $0["redelivered"] as? Bool != false }.count
        #expect(redelivered == 0, "\(rest)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: a lost connection was recovered by the library under rmq's consumer, and the
    /// recovered channel kept the first channel's prefetch, not what was left of the count:
    /// the broker sent past the count, and those messages went back marked redelivered
    /// though rmq never printed them (here 2: m-19 and m-20). Now rmq opens a new
    /// connection and channel itself, with a prefetch of at most what is left.
    @Test func consumeWithACountTakesNoMoreThanItNeedsAcrossALostConnection() async throws {
        let (connection, channel, queue) = try await Self.filledQueue("cli-count-cut", count: 17)
        let proxy = try TestBroker.proxy()
        defer { proxy.stop() }
        let rmq = try RunningRMQ(
            ["consume", "--queue", queue, "--count", "20", "--prefetch", "5", "--uri", try proxy.uri(for: TestBroker.url)])
        var printed: [String] = []
        for _ in 1...17 { printed.append(try #require(try await rmq.readOneLine(), "\(rmq.errorOutput)")) }
        // Acknowledged up to the 15th; the last 5 of 20 are acknowledged only at the end, so
        // m-16 and m-17 are held back.
        try await eventually(timeout: .seconds(50), "rmq to acknowledge 15 and hold back 2") {
            guard let counts = try await Self.counts(queue) else { return false }
            return counts.ready == 0 && counts.unacknowledged == 2
        }
        // Lost: the two go back to the queue once the broker has seen the connection go (not
        // before: its consumer could still take what is published), and ten more arrive while
        // rmq cannot reconnect.
        proxy.setMode(.rejectNewConnections)
        proxy.cutAll()
        try await eventually(timeout: .seconds(50), "the broker to drop rmq's consumer") {
            guard let counts = try await Self.counts(queue) else { return false }
            return counts.ready == 2 && counts.consumers == 0
        }
        try await channel.confirmSelect()
        for number in 18...27 {
            #expect(try await channel.publishAndWaitForConfirm(Array("m-\(number)".utf8), routingKey: queue) == .acked)
        }
        proxy.setMode(.passThrough)
        async let rest = rmq.readToEnd()
        let status = await rmq.status()
        printed += await rest
        #expect(status == 0, "\(rmq.errorOutput)")
        #expect(printed.count == 20, "\(printed)")

        // Printed: m-1...m-17, then m-16 and m-17 again and m-18. What rmq never printed was
        // never delivered: nothing of it is marked redelivered.
        let lines = try RMQTool.Result(status: status ?? -1, output: printed.joined(separator: "\n"), errorOutput: "").jsonLines()
        let bodies = Set(lines.compactMap { $0["body"] as? String })
        let depth = try await Self.settledDepth(queue)
        #expect(depth == 27 - bodies.count, "\(bodies.sorted())")
        try #require(depth > 0)
        let left = try await RMQTool.run(["consume", "--queue", queue, "--count", "\(depth)"])
        let overFetched = try left.jsonLines().filter { line in
            line["redelivered"] as? Bool != false && !bodies.contains(line["body"] as? String ?? "")
        }
        #expect(overFetched.isEmpty, "delivered past the count, never printed: \(overFetched)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: --auto-ack with --count ran, and the broker sent (and forgot) messages past the count.
    @Test func consumeRefusesAutoAckWithACount() async throws {
        let result = try await RMQTool.run(["consume", "--queue", "any", "--auto-ack", "--count", "1"])
        #expect(result.status == 64, "a usage error: \(result)")
        #expect(result.errorOutput.contains("--auto-ack cannot go with --count"), "\(result)")
        // Nor a prefetch of 0, which is no limit at all.
        let unbounded = try await RMQTool.run(["consume", "--queue", "any", "--prefetch", "0", "--count", "1"])
        #expect(unbounded.status == 64, "a usage error: \(unbounded)")
        #expect(unbounded.errorOutput.contains("--prefetch 0"), "\(unbounded)")
    }

    /// Before: a signal killed rmq where it stood (status: the signal), with lines written
    /// and not acknowledged (they came again). Now it stops taking deliveries, acknowledges
    /// what it wrote and exits 128 + the signal: the queue keeps exactly what was not printed.
    @Test(arguments: [SIGINT, SIGTERM])
    func consumeStopsCleanlyOnASignal(signal: Int32) async throws {
        let (connection, channel, queue) = try await Self.filledQueue("cli-signal", count: 300)
        let rmq = try RunningRMQ(["consume", "--queue", queue, "--prefetch", "10"])
        for _ in 1...20 { _ = try await rmq.readOneLine() }
        rmq.send(signal)
        // Read on while it stops (it waits for its last batch to be read), up to its end.
        async let rest = rmq.readToEnd()
        let status = await rmq.status()
        let printed = 20 + (await rest).count
        #expect(status == 128 + signal && !rmq.killedBySignal, "\(rmq.errorOutput)")
        #expect(rmq.errorOutput.contains("stopped by SIG"), "\(rmq.errorOutput)")
        #expect(try await Self.settledDepth(queue) + printed == 300)
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: when the connection was lost while rmq waited for its reader to take the last
    /// line of --count, the failed ack sent rmq to a new connection with nothing left to
    /// take: its prefetch of 0 meant no limit, the broker sent the rest of the queue, and rmq
    /// wrote a line past the count. Now it stops at the count and exits 1, saying the last
    /// ack may not have reached the broker.
    @Test func consumeStopsAtItsCountWhenTheLastAckIsLost() async throws {
        let (connection, channel, queue) = try await Self.filledQueue("cli-count-lost", count: 5)
        let proxy = try TestBroker.proxy()
        defer { proxy.stop() }
        let rmq = try RunningRMQ(
            ["consume", "--queue", queue, "--count", "1", "--prefetch", "1", "--uri", try proxy.uri(for: TestBroker.url)])
        // rmq has its one delivery, has cancelled its consumer and written the line; it
        // acknowledges it once the line is read. The connection goes first.
        try await eventually(timeout: .seconds(60), "rmq to write its line") { rmq.unreadBytes > 0 }
        proxy.cutAll()
        try await eventually(timeout: .seconds(60), "the broker to see rmq's connection go") {
            guard let counts = try await Self.counts(queue) else { return false }
            return counts.ready == 5 && counts.consumers == 0
        }
        async let lines = rmq.readToEnd()
        let status = await rmq.status()
        #expect(await lines.count == 1, "\(rmq.errorOutput)")
        #expect(status == 1, "the run did not take its message off the queue: \(rmq.errorOutput)")
        #expect(rmq.errorOutput.contains("did not confirm that it took the last 1 acknowledgements"), "\(rmq.errorOutput)")
        #expect(proxy.counters.accepted == 1, "no second connection: \(proxy.counters)")
        #expect(try await Self.settledDepth(queue) == 5)
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: a signal while rmq waited to reconnect ended it with status 1 and
    /// "CancellationError" (the wait's own error), without the summary. Now it is a stop
    /// like any other: 130, and what was written and acknowledged.
    @Test func consumeStopsCleanlyOnASignalWhileWaitingToReconnect() async throws {
        let (connection, channel, queue) = try await Self.filledQueue("cli-signal-away", count: 3)
        let proxy = try TestBroker.proxy()
        defer { proxy.stop() }
        let rmq = try RunningRMQ(["consume", "--queue", queue, "--uri", try proxy.uri(for: TestBroker.url)])
        for _ in 1...3 { #expect(try await rmq.readOneLine() != nil, "\(rmq.errorOutput)") }
        try await eventually(timeout: .seconds(120), "rmq to acknowledge all 3") {
            try await Self.counts(queue).map { $0.ready == 0 && $0.unacknowledged == 0 } ?? false
        }
        proxy.setMode(.rejectNewConnections)
        proxy.cutAll()
        try await eventually(timeout: .seconds(120), "rmq to wait to reconnect") { rmq.errorOutput.contains("retrying in") }
        rmq.send(SIGINT)
        let status = await rmq.status()
        #expect(status == 130 && !rmq.killedBySignal, "\(rmq.errorOutput)")
        #expect(rmq.errorOutput.contains("stopped by SIGINT: 3 lines written, 3 messages acknowledged"), "\(rmq.errorOutput)")
        #expect(!rmq.errorOutput.contains("CancellationError"), "\(rmq.errorOutput)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: the idle timeout ran on while the connection was down, and an outage ended
    /// the run as if the queue were drained (exit 0). Now an outage as long as the idle
    /// timeout is an error on standard error and exit 1.
    @Test func consumeReportsAnOutageInsteadOfIdling() async throws {
        let (connection, channel, queue) = try await RMQToolTests.declareQueue("cli-outage")
        let proxy = try TestBroker.proxy()
        let rmq = try RunningRMQ(["consume", "--queue", queue, "--idle-timeout", "10", "--uri", try proxy.uri(for: TestBroker.url)])
        try await channel.publish(Array("one".utf8), routingKey: queue)
        // Consuming (and the idle clock just reset): now the broker becomes unreachable.
        #expect(try await rmq.readOneLine()?.contains("\"one\"") == true)
        let before = proxy.counters
        proxy.setMode(.rejectNewConnections)
        proxy.cutAll()
        let status = await rmq.status()
        #expect(status == 1, "\(rmq.errorOutput); proxy before the cut \(before), after \(proxy.counters)")
        #expect(rmq.errorOutput.contains("connection lost"), "\(rmq.errorOutput)")
        #expect(rmq.errorOutput.contains("connection has been down"), "\(rmq.errorOutput)")
        proxy.stop()
        try await channel.queueDelete(queue)
        try await connection.close()
    }
}
