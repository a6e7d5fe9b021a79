import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// Messages cross between this client and Python's pika both ways, headers of every type intact.
@Suite("Interop with pika", .timeLimit(.minutes(2)))
struct InteropTests {
    static var script: String {
        TestBroker.repositoryRoot().appendingPathComponent("scripts/interop/pika_interop.py").path
    }

    @Test func pikaReadsWhatWePublish() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("to-pika"), durable: true)
        let headers: RabbitMQFieldTable = [
            "bool": .bool(true), "i8": .int8(-8), "u8": .uint8(200), "i16": .int16(-16_000), "u16": .uint16(60_000),
            "i32": .int32(-2_000_000_000), "u32": .uint32(4_000_000_000), "i64": .int64(-9_000_000_000_000),
            // pika decodes floats through int(), so only whole numbers survive its side.
            "float": .float(3), "double": .double(-2),
            "decimal": .decimal(RabbitMQDecimal(scale: 2, value: 1234)), "string": .string("héllo ✓"),
            "bytes": .bytes([0, 1, 254, 255]), "timestamp": .timestamp(1_700_000_000), "void": .void,
            "array": .array([.int64(1), .string("two"), .array([.bool(false)])]),
            "table": .table(["nested": .table(["deep": .int32(3)])]),
        ]
        let properties = RabbitMQProperties(
            contentType: "application/json", contentEncoding: "utf-8", headers: headers, deliveryMode: .persistent,
            priority: 5, correlationID: "swift-corr", replyTo: "swift-replies", expiration: "60000",
            messageID: "swift-1", timestamp: 1_700_000_123, type: "swift.event", userID: "guest", appID: "swift")
        try await channel.confirmSelect()
        #expect(try await channel.publishAndWaitForConfirm(Array(#"{"from":"swift"}"#.utf8), routingKey: queue.name, properties: properties) == .acked)

        let output = try await TestBroker.run("/usr/bin/env", ["python3", Self.script, "consume", TestBroker.url, queue.name])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        #expect(json["body"] as? String == #"{"from":"swift"}"#)
        #expect(json["content_type"] as? String == "application/json")
        #expect(json["content_encoding"] as? String == "utf-8")
        #expect(json["delivery_mode"] as? Int == 2)
        #expect(json["priority"] as? Int == 5)
        #expect(json["correlation_id"] as? String == "swift-corr")
        #expect(json["reply_to"] as? String == "swift-replies")
        #expect(json["expiration"] as? String == "60000")
        #expect(json["message_id"] as? String == "swift-1")
        #expect(json["timestamp"] as? Int == 1_700_000_123)
        #expect(json["type"] as? String == "swift.event")
        #expect(json["user_id"] as? String == "guest")
        #expect(json["app_id"] as? String == "swift")

        let received = try #require(json["headers"] as? [String: Any])
        func tagged(_ key: String) -> [String: Any]? { received[key] as? [String: Any] }
        #expect(tagged("bool")?["bool"] as? Bool == true)
        for (key, value) in [
            ("i8", -8), ("u8", 200), ("i16", -16_000), ("u16", 60_000), ("i32", -2_000_000_000),
            ("u32", 4_000_000_000), ("i64", -9_000_000_000_000), ("float", 3), ("double", -2),
        ] {
            #expect(tagged(key)?["int"] as? Int == value, "\(key): \(String(describing: received[key]))")
        }
        #expect(tagged("decimal")?["decimal"] as? String == "12.34")
        #expect(tagged("string")?["str"] as? String == "héllo ✓")
        #expect(tagged("bytes")?["bytes"] as? String == Data([0, 1, 254, 255]).base64EncodedString())
        #expect(tagged("timestamp")?["timestamp"] as? Int == 1_700_000_000)
        #expect(tagged("void")?.keys.contains("void") == true)
        let array = try #require(tagged("array")?["array"] as? [[String: Any]])
        #expect(array.count == 3)
        #expect(array[0]["int"] as? Int == 1)
        #expect(array[1]["str"] as? String == "two")
        #expect(((array[2]["array"] as? [[String: Any]])?.first?["bool"] as? Bool) == false)
        let table = try #require(tagged("table")?["table"] as? [String: Any])
        let nested = try #require((table["nested"] as? [String: Any])?["table"] as? [String: Any])
        #expect((nested["deep"] as? [String: Any])?["int"] as? Int == 3)

        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func weReadWhatPikaPublishes() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("from-pika"), durable: true)
        let consumer = try await channel.consume(queue: queue.name)
        try await TestBroker.run("/usr/bin/env", ["python3", Self.script, "publish", TestBroker.url, queue.name])

        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        try delivery.ack()
        #expect(delivery.bodyString == #"{"from": "pika"}"#)
        let p = delivery.properties
        #expect(p.contentType == "application/json")
        #expect(p.contentEncoding == "utf-8")
        #expect(p.deliveryMode == .persistent)
        #expect(p.priority == 4)
        #expect(p.correlationID == "py-corr")
        #expect(p.replyTo == "py-replies")
        #expect(p.expiration == "60000")
        #expect(p.messageID == "py-1")
        #expect(p.timestamp == 1_700_000_456)
        #expect(p.type == "py.event")
        #expect(p.userID == "guest")
        #expect(p.appID == "pika")

        let expected: RabbitMQFieldTable = [
            "str": .string("héllo ✓"),
            "bytes": .bytes([0, 1, 254, 255]),
            "true": .bool(true),
            "false": .bool(false),
            // pika writes ints that fit in 32 bits as `I`, larger ones as `l`.
            "small": .int32(42),
            "negative": .int32(-7),
            "big": .int64(1 << 40 + 3),
            "decimal": .decimal(RabbitMQDecimal(scale: 2, value: 1234)),
            "timestamp": .timestamp(1_715_949_000),
            "table": .table(["nested": .table(["deeper": .array([.int32(1), .string("two"), .void])]), "flag": .bool(true)]),
            "array": .array([.int32(1), .string("x"), .bytes([7]), .array([.bool(false)])]),
            "void": .void,
        ]
        let headers = try #require(p.headers)
        for entry in expected {
            #expect(headers[entry.key] == entry.value, "\(entry.key)")
        }
        #expect(headers.count == expected.count)
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }
}

/// Field tables nested deeper than ``RabbitMQFieldTable/maxDepth`` are refused with a typed
/// error, never decoded or encoded by recursion on the I/O thread's stack.
@Suite("Deeply nested field tables", .timeLimit(.minutes(2)))
struct DeepFieldTableTests {
    static func nested(_ depth: Int) -> RabbitMQFieldTable {
        var table: RabbitMQFieldTable = ["leaf": .int32(1)]
        for _ in 0..<depth { table = ["t": .table(table)] }
        return table
    }

    @Test func publishingHeadersNestedTooDeepFailsWithATypedError() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        do {
            try await channel.publish("deep", routingKey: queue.name, properties: RabbitMQProperties(headers: Self.nested(150)))
            Issue.record("a table nested 150 deep was accepted")
        } catch let error as RabbitMQError {
            #expect(error.code == .invalidConfiguration, "\(error)")
        }
        // 99 levels below the headers table (100 tables) is fine.
        try await channel.publish("ok", routingKey: queue.name, properties: RabbitMQProperties(headers: Self.nested(99)))
        #expect(channel.isOpen && connection.isOpen)
        try await connection.close()
    }

    /// A message from another client whose headers nest too deep is dead-lettered (rejected
    /// without requeue), not handed out; the consumer and the connection go on.
    @Test func aDeliveryWithHeadersNestedTooDeepIsDeadLetteredNotHandedOut() async throws {
        let connection = try await TestBroker.connect()
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let parking = try await channel.queueDeclare("", exclusive: true)
        let queue = try await channel.queueDeclare(
            "", exclusive: true,
            arguments: ["x-dead-letter-exchange": "", "x-dead-letter-routing-key": .string(parking.name)])
        let consumer = try await channel.consume(queue: queue.name)
        try await TestBroker.run("/usr/bin/env", ["python3", InteropTests.script, "publish-deep", TestBroker.url, queue.name])
        var iterator = consumer.makeAsyncIterator()
        let first = try #require(try await iterator.next())
        #expect(first.bodyString == "after")
        try first.ack()
        try await eventually("the deep message to be dead-lettered") {
            try await channel.queueDeclare(parking.name, passive: true).messageCount == 1
        }
        #expect(!log.all.contains { if case .disconnected = $0 { true } else { false } })
        try await connection.close()
    }
}
