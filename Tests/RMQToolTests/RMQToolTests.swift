import Foundation
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

/// The `rmq` tool, run as a built binary against the test broker.
@Suite("rmq tool", .timeLimit(.minutes(3)))
struct RMQToolTests {
    static func declareQueue(_ prefix: String) async throws -> (RabbitMQConnection, RabbitMQChannel, String) {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName(prefix), durable: true).name
        return (connection, channel, queue)
    }

    /// A failure is exactly one line on standard error that starts with "rmq:".
    static func expectOneLineError(_ result: RMQTool.Result, containing text: String) {
        #expect(result.status != 0, "\(result)")
        let lines = result.errorOutput.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count == 1, "one line: \(result)")
        #expect(result.errorOutput.hasPrefix("rmq: "), "\(result)")
        #expect(result.errorOutput.contains(text), "\(result)")
        #expect(!result.errorOutput.contains("Fatal error") && !result.errorOutput.contains("Stack dump"))
        #expect(result.output.isEmpty)
    }

    @Test func publishedPropertiesAndHeadersComeOutOfConsumeAsJSON() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-roundtrip")
        let published = try await RMQTool.run([
            "publish", "--exchange", "", "--routing-key", queue, "--persistent", "--confirm",
            "--headers", #"{"count": 3, "ratio": 1.5, "whole": 2.0, "name": "x/y", "flag": true, "none": null, "nested": {"list": [1, "two", null]}}"#,
            "--content-type", "text/plain", "--correlation-id", "c-1", "--reply-to", "replies", "--message-id", "m-1",
            "--type", "greeting", "--app-id", "cli-test", "--expiration", "60000", "héllo wörld",
        ])
        #expect(published.status == 0, "\(published)")

        // The header types as the library reads them.
        let delivery = try #require(try await channel.get(queue: queue))
        try delivery.nack(requeue: true)
        let headers = try #require(delivery.properties.headers)
        #expect(headers["count"] == .int64(3))
        #expect(headers["ratio"] == .double(1.5))
        #expect(headers["whole"] == .double(2), "a number written with a fraction stays a double")
        #expect(headers["flag"] == .bool(true))
        #expect(headers["none"] == .void)
        #expect(headers["nested"] == .table(["list": .array([.int64(1), .string("two"), .void])]))

        let consumed = try await RMQTool.run(["consume", "--queue", queue, "--count", "1"])
        #expect(consumed.status == 0, "\(consumed)")
        let line = try #require(try consumed.jsonLines().first)
        #expect(Set(line.keys) == ["exchange", "routingKey", "redelivered", "properties", "body"])
        #expect(line["exchange"] as? String == "")
        #expect(line["routingKey"] as? String == queue)
        #expect(line["redelivered"] as? Bool == true, "it was nacked back once")
        #expect(line["body"] as? String == "héllo wörld")
        let properties = try #require(line["properties"] as? [String: Any])
        #expect(properties["contentType"] as? String == "text/plain")
        #expect(properties["deliveryMode"] as? Int == 2)
        #expect(properties["correlationId"] as? String == "c-1")
        #expect(properties["replyTo"] as? String == "replies")
        #expect(properties["messageId"] as? String == "m-1")
        #expect(properties["type"] as? String == "greeting")
        #expect(properties["appId"] as? String == "cli-test")
        #expect(properties["expiration"] as? String == "60000")
        #expect(properties["timestamp"] == nil && properties["userId"] == nil && properties["priority"] == nil)
        let consumedHeaders = try #require(properties["headers"] as? [String: Any])
        #expect(consumedHeaders["count"] as? Int == 3)
        #expect(consumedHeaders["name"] as? String == "x/y")
        #expect(consumedHeaders["none"] is NSNull)
        #expect(consumed.output.contains(#""name":"x/y""#), "no escaped slashes")
        #expect(try await channel.queueDeclare(queue, passive: true).messageCount == 0, "acknowledged")

        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func consumeTagsWhatJSONCannotSay() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-tags")
        let headers: RabbitMQFieldTable = [
            "when": .timestamp(1_700_000_000), "raw": .bytes([0, 255]), "price": .decimal(RabbitMQDecimal(scale: 2, value: 1234)),
            "nothing": .void, "small": .int8(-3), "single": .float(0.5), "table": ["deep": .uint32(7)],
        ]
        try await channel.publish([0xFF, 0xFE, 0x00], routingKey: queue, properties: RabbitMQProperties(headers: headers, timestamp: 1_700_000_123))
        let consumed = try await RMQTool.run(["consume", "--queue", queue, "--count", "1"])
        #expect(consumed.status == 0, "\(consumed)")
        let line = try #require(try consumed.jsonLines().first)
        #expect((line["body"] as? [String: String]) == ["base64": Data([0xFF, 0xFE, 0x00]).base64EncodedString()])
        let properties = try #require(line["properties"] as? [String: Any])
        #expect(properties["timestamp"] as? Int == 1_700_000_123)
        let tagged = try #require(properties["headers"] as? [String: Any])
        #expect((tagged["when"] as? [String: Int]) == ["timestamp": 1_700_000_000])
        #expect((tagged["raw"] as? [String: String]) == ["bytes": "AP8="])
        #expect((tagged["price"] as? [String: String]) == ["decimal": "12.34"])
        #expect(tagged["nothing"] is NSNull)
        #expect(tagged["small"] as? Int == -3)
        #expect(tagged["single"] as? Double == 0.5)
        #expect(((tagged["table"] as? [String: Any])?["deep"] as? Int) == 7)
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func publishSendsOneMessagePerLineOfStandardInput() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-lines")
        let result = try await RMQTool.run(
            ["publish", "--exchange", "", "--routing-key", queue, "--confirm"], input: "first\nsecond\n\nfourth")
        #expect(result.status == 0, "\(result)")
        var bodies: [String] = []
        while let delivery = try await channel.get(queue: queue, autoAck: true) { bodies.append(delivery.bodyString) }
        #expect(bodies == ["first", "second", "fourth"], "a blank line is not a message")
        #expect(result.errorOutput.isEmpty, "\(result)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Standard input is read in blocks: lines that straddle a block, bytes that are not
    /// UTF-8 and a last line without a newline all come out as they went in, one message per
    /// line, in order; a CRLF line ends like an LF one, and a blank line is skipped.
    @Test func publishReadsStandardInputInBlocksByteForByte() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-blocks")
        var expected: [[UInt8]] = [Array("crlf\r".utf8), [0xFF, 0xFE, 0x00, 0x80], [], Array(repeating: UInt8(ascii: "x"), count: 150_000)]
        expected += (1...3000).map { Array("line-\($0)".utf8) }
        expected.append(Array("no newline at the end".utf8))
        var input: [UInt8] = []
        for line in expected { input += line + [UInt8(ascii: "\n")] }
        input.removeLast()
        let result = try await RMQTool.run(
            ["publish", "--exchange", "", "--routing-key", queue, "--confirm"], inputBytes: input)
        #expect(result.status == 0, "\(result)")
        var bodies: [[UInt8]] = []
        while let delivery = try await channel.get(queue: queue, autoAck: true) { bodies.append(delivery.body) }
        expected[0] = Array("crlf".utf8)
        expected.remove(at: 2)
        #expect(bodies.count == expected.count)
        #expect(bodies == expected)
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func envelopeWrapsTheJSONBody() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-envelope")
        let result = try await RMQTool.run([
            "publish", "--exchange", "", "--routing-key", queue, "--envelope", "shop.order.placed",
            "--correlation-id", "c-9", "--app-id", "shop", #"{"orderId": 7, "total": 12.5}"#,
        ])
        #expect(result.status == 0, "\(result)")
        struct Placed: Codable, Sendable, Equatable {
            var orderId: Int
            var total: Double
        }
        let delivery = try #require(try await channel.get(queue: queue, autoAck: true))
        let envelope = try delivery.envelope(Placed.self)
        #expect(envelope.type == "shop.order.placed")
        #expect(envelope.data == Placed(orderId: 7, total: 12.5))
        #expect(envelope.metadata.correlationID == "c-9")
        #expect(envelope.metadata.source == "shop")
        #expect(delivery.properties.messageID == envelope.id.uuidString.lowercased())
        #expect(delivery.properties.type == "shop.order.placed")
        #expect(delivery.properties.contentType == "application/json")
        #expect(delivery.properties.deliveryMode == .persistent)
        #expect(delivery.properties.appID == "shop")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func aReturnedMessageFailsAConfirmedPublish() async throws {
        let result = try await RMQTool.run([
            "publish", "--exchange", "amq.direct", "--routing-key", TestBroker.uniqueName("nowhere"), "--mandatory", "lost",
        ])
        Self.expectOneLineError(result, containing: "1 of 1 messages not confirmed: 1 returned (312 NO_ROUTE)")
    }

    @Test func badInputGetsOneLineAndNoPassword() async throws {
        Self.expectOneLineError(
            try await RMQTool.run(["publish", "--exchange", TestBroker.uniqueName("missing"), "x"]),
            containing: "404 NOT_FOUND")
        Self.expectOneLineError(
            try await RMQTool.run(["publish", "--exchange", "", "--headers", #"{"a": 1,}"#, "x"]),
            containing: "--headers is not valid JSON")
        Self.expectOneLineError(
            try await RMQTool.run(["publish", "--exchange", "", "--headers", "[1]", "x"]),
            containing: "--headers must be a JSON object")
        Self.expectOneLineError(
            try await RMQTool.run(["publish", "--exchange", "", "--envelope", "t", "{oops}"]),
            containing: "--envelope: the body is not valid JSON")
        Self.expectOneLineError(
            try await RMQTool.run(["publish", "--exchange", "", "--envelope", "t"], input: "{}\nnope\n"),
            containing: "line 2 is not valid JSON")
        Self.expectOneLineError(
            try await RMQTool.run(["consume", "--queue", "q", "--bind", "no-colon"]),
            containing: "--bind takes EXCHANGE:KEY")
        Self.expectOneLineError(
            try await RMQTool.run(["consume", "--queue", TestBroker.uniqueName("absent"), "--count", "1"]),
            containing: "404 NOT_FOUND")
        Self.expectOneLineError(
            try await RMQTool.run(["publish", "--exchange", "", "--uri", "http://x", "x"]),
            containing: "unsupported scheme 'http'")

        let secret = "s3cr3t-\(UUID().uuidString)"
        let unreachable = try await RMQTool.run(
            ["publish", "--exchange", "", "x"], environment: ["RABBITMQ_URL": "amqp://guest:\(secret)@127.0.0.1:1/"])
        Self.expectOneLineError(unreachable, containing: "127.0.0.1:1")
        #expect(!unreachable.errorOutput.contains(secret))

        let cluster = try await RMQTool.run([
            "publish", "--exchange", "", "--uri", "amqp://guest:\(secret)@127.0.0.1:1/", "--uri", "amqp://127.0.0.1:2/", "x",
        ])
        Self.expectOneLineError(cluster, containing: "127.0.0.1:2")
        #expect(cluster.errorOutput.contains("127.0.0.1:1"))
        #expect(!cluster.errorOutput.contains(secret))
    }

    @Test func theURIListIsTriedInOrder() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-failover")
        let result = try await RMQTool.run(
            ["publish", "--exchange", "", "--routing-key", queue, "--confirm", "over"],
            environment: ["RABBITMQ_URL": "amqp://127.0.0.1:1/, \(try TestBroker.url)"])
        #expect(result.status == 0, "\(result)")
        #expect(try await channel.get(queue: queue, autoAck: true)?.bodyString == "over")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func rpcServeAnswersRPCCallsThroughAShellCommand() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-rpc")
        let server = Task { try await RMQTool.run(["rpc", "serve", "--queue", queue, "--count", "1", "--exec", "tr a-z A-Z"]) }
        let upper = try await RMQTool.run(["rpc", "call", "--queue", queue, "hello"])
        #expect(upper.status == 0, "\(upper)")
        #expect(upper.output == "HELLO\n")
        #expect(try await server.value.status == 0)

        // A failing command becomes an error reply, and the caller fails with it.
        let failing = try await channel.queueDeclare(TestBroker.uniqueName("cli-rpc-fail"), durable: true).name
        let failingServer = Task {
            try await RMQTool.run(["rpc", "serve", "--queue", failing, "--count", "1", "--exec", "echo no stock >&2; exit 3"])
        }
        let remote = try await RMQTool.run(["rpc", "call", "--queue", failing, "A-1"])
        Self.expectOneLineError(remote, containing: "remote error: command exited with status 3: no stock")
        #expect(try await failingServer.value.status == 0)

        // Echo by default, on a queue that exists already (durable), and --count ends the server.
        let echo = try await channel.queueDeclare(TestBroker.uniqueName("cli-rpc-echo"), durable: true).name
        let echoServer = Task { try await RMQTool.run(["rpc", "serve", "--queue", echo, "--count", "2"]) }
        for body in ["one", "two"] {
            let reply = try await RMQTool.run(["rpc", "call", "--queue", echo, body])
            #expect(reply.output == body + "\n", "\(reply)")
        }
        #expect(try await echoServer.value.status == 0)
        for name in [queue, failing, echo] { try await channel.queueDelete(name) }
        try await connection.close()
    }

    @Test func rpcCallTimesOutWithAClearMessage() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-rpc-timeout")
        let result = try await RMQTool.run(["rpc", "call", "--queue", queue, "--timeout", "0.3", "anyone?"])
        Self.expectOneLineError(result, containing: "no reply from '\(queue)' within 300 ms")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Lines are written in batches and each delivery acknowledged only after its batch is
    /// written: with a prefetch far below the message count the consumer must still write
    /// (and acknowledge) before it waits, or the broker would stop sending. Every line comes
    /// out, in order, with --count and with --idle-timeout ending the run.
    @Test func consumeWritesInBatchesAndAcknowledgesWhatItWrote() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-batches")
        for number in 1...2000 { try await channel.publish(Array("m-\(number)".utf8), routingKey: queue) }
        let counted = try await RMQTool.run(["consume", "--queue", queue, "--prefetch", "7", "--count", "1500"])
        #expect(counted.status == 0, "\(counted)")
        #expect(try counted.jsonLines().compactMap { $0["body"] as? String } == (1...1500).map { "m-\($0)" })
        #expect(counted.errorOutput.isEmpty, "no progress line when standard error is not a terminal")

        let idle = try await RMQTool.run(["consume", "--queue", queue, "--prefetch", "3", "--idle-timeout", "1"])
        #expect(idle.status == 0, "\(idle)")
        #expect(try idle.jsonLines().compactMap { $0["body"] as? String } == (1501...2000).map { "m-\($0)" })
        #expect(try await channel.queueDeclare(queue, passive: true).messageCount == 0, "all acknowledged")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func consumeDeclaresBindsAndStopsWhenIdle() async throws {
        let queue = TestBroker.uniqueName("cli-idle")
        let result = try await RMQTool.run([
            "consume", "--queue", queue, "--declare", "--bind", "amq.topic:cli.#", "--idle-timeout", "0.5",
        ])
        #expect(result.status == 0, "\(result)")
        #expect(result.output.isEmpty)
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        try await channel.confirmSelect()
        // The binding exists: a mandatory publish to it is routed.
        #expect(try await channel.publishAndWaitForConfirm(
            Array("x".utf8), exchange: "amq.topic", routingKey: "cli.test", mandatory: true) == .acked)
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func consumeDeclaresQuorumQueues() async throws {
        let queue = TestBroker.uniqueName("cli-quorum")
        let result = try await RMQTool.run(["consume", "--queue", queue, "--declare", "--quorum", "--idle-timeout", "0.2"])
        #expect(result.status == 0, "\(result)")
        let listing = try await TestBroker.ctl("list_queues", "--no-table-headers", "--silent", "name", "type", "durable")
        #expect(listing.contains("\(queue)\tquorum\ttrue"), "\(listing)")
        let connection = try await TestBroker.connect()
        try await connection.openChannel().queueDelete(queue)
        try await connection.close()
    }

    /// rmq goes on consuming across a lost connection. The connection goes through a proxy
    /// that cuts it: a rabbitmqctl close and the polling of the broker's connection list for
    /// the new one took two to four minutes of rabbitmqctl runs on the RabbitMQ 4 node while
    /// the suite loaded the machine (a fresh-clone run passed the suite's 3-minute limit).
    @Test func consumeKeepsGoingWhenItsConnectionIsClosed() async throws {
        let (connection, channel, queue) = try await Self.declareQueue("cli-reconnect")
        let proxy = try TestBroker.proxy()
        defer { proxy.stop() }
        let uri = try proxy.uri(for: TestBroker.url)
        // The idle timeout bounds a failure to reconnect (the result then lacks "after"); the
        // time the connection is down does not count.
        let consumer = Task {
            // --prefetch 1: with --count, rmq holds back the acks of the last --prefetch messages
            // (so the broker never sends one past the count); the first is then acked at once.
            try await RMQTool.run(["consume", "--queue", queue, "--count", "2", "--prefetch", "1", "--idle-timeout", "90", "--uri", uri])
        }
        try await channel.publish(Array("before".utf8), routingKey: queue)
        // Acknowledged (so it cannot come back as a duplicate) before the connection goes away.
        try await eventually(timeout: .seconds(120), "rmq to acknowledge the first message") {
            let listing = try await TestBroker.ctl("list_queues", "--no-table-headers", "--silent", "name", "messages")
            return listing.split(separator: "\n").contains { $0 == "\(queue)\t0" }
        }
        #expect(proxy.counters.cut == 0)
        proxy.cutAll()
        // Queued while rmq is away; it takes it once it has reconnected (rmq or the library).
        try await channel.publish(Array("after".utf8), routingKey: queue)
        let result = try await consumer.value
        #expect(result.status == 0, "\(result)")
        #expect(try result.jsonLines().compactMap { $0["body"] as? String } == ["before", "after"], "\(result)")
        #expect(proxy.counters.accepted >= 2, "rmq connected again: \(proxy.counters)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    @Test func demoRunsEveryPattern() async throws {
        let result = try await RMQTool.run(["demo", "--rpc-calls", "200"])
        #expect(result.status == 0, "\(result)")
        for pattern in ["direct ", "topic ", "fanout ", "rpc ", "retry ", "done: every pattern worked"] {
            #expect(result.output.contains(pattern), "\(pattern): \(result.output)")
        }
        #expect(result.output.contains("parked after attempts 1, 2, 3, 4: retries-exhausted, x-retry-count 3"))
        #expect(result.output.contains("invalid-envelope"))
        // Everything it declared is gone, the subscriptions' dead-letter queues and exchanges
        // included ("names rmq-demo-1a2b3c4d.*" on its first line).
        let prefix = try #require(
            result.output.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("rmq-demo-") }.map { String($0.dropLast(2)) })
        let queues = try await TestBroker.ctl("list_queues", "name", "--no-table-headers", "--silent")
        let exchanges = try await TestBroker.ctl("list_exchanges", "name", "--no-table-headers", "--silent")
        let left = (queues + "\n" + exchanges).split(whereSeparator: \.isNewline).filter { $0.hasPrefix(prefix) }
        #expect(left.isEmpty, "left behind: \(left)")
    }
}
