import Foundation
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

struct Invoice: Codable, Sendable, Equatable {
    struct Line: Codable, Sendable, Equatable {
        var sku: String
        var qty: Int
    }
    var invoice: String
    var cents: Int
    var lines: [Line]
}

/// Envelopes and RPC between this package and Python's pika, both ways.
@Suite("Patterns: interop with pika", .timeLimit(.minutes(2)))
struct PatternsInteropTests {
    static var script: String {
        TestBroker.repositoryRoot().appendingPathComponent("scripts/interop/pika_patterns.py").path
    }

    static func pika(_ arguments: String...) async throws -> String {
        try await TestBroker.run("/usr/bin/env", ["python3", script] + arguments)
    }

    @Test func pikaReadsOurEnvelopeAndItsProperties() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("envelope-to-pika"), durable: true)
        try await channel.confirmSelect()
        let envelope = RabbitMQEnvelope(
            type: "billing.invoice.paid",
            data: Invoice(invoice: "INV-1", cents: 990, lines: [.init(sku: "A", qty: 2)]),
            metadata: RabbitMQEnvelopeMetadata(source: "swift-billing", correlationID: "corr-7", userID: "u-1", extra: ["region": "eu"]),
            timestamp: Date(timeIntervalSince1970: 1_715_949_000.5))
        try await channel.publishConfirmed(envelope, routingKey: queue.name, headers: ["trace": "t-1"])

        let output = try await Self.pika("read-envelope", TestBroker.url, queue.name)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        #expect((json["problems"] as? [String]) == [], "\(output)")
        let seen = try #require(json["envelope"] as? [String: Any])
        #expect(seen["id"] as? String == envelope.id.uuidString.lowercased())
        #expect(seen["type"] as? String == "billing.invoice.paid")
        #expect(seen["version"] as? String == "1.0")
        #expect(json["timestamp_epoch"] as? Double == 1_715_949_000.5)
        let data = try #require(seen["data"] as? [String: Any])
        #expect(data["invoice"] as? String == "INV-1")
        #expect(data["cents"] as? Int == 990)
        #expect(seen["metadata"] as? [String: String]
            == ["source": "swift-billing", "correlation_id": "corr-7", "user_id": "u-1", "region": "eu"])
        #expect(json["content_type"] as? String == "application/json")
        #expect(json["delivery_mode"] as? Int == 2)
        #expect(json["message_id"] as? String == envelope.id.uuidString.lowercased())
        #expect(json["type"] as? String == "billing.invoice.paid")
        #expect(json["timestamp"] as? Int == 1_715_949_000)
        #expect(json["correlation_id"] as? String == "corr-7")
        #expect(json["app_id"] as? String == "swift-billing")
        #expect((json["headers"] as? [String: String]) == ["trace": "t-1"])

        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func weReadAnEnvelopeWrittenByPython() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("envelope-from-pika"), durable: true)
        let id = try await Self.pika("write-envelope", TestBroker.url, queue.name)
            .trimmingCharacters(in: .whitespacesAndNewlines)

        let delivery = try #require(try await channel.get(queue: queue.name, autoAck: true))
        let envelope = try delivery.envelope(Invoice.self)
        #expect(envelope.id == UUID(uuidString: id))
        #expect(envelope.type == "billing.invoice.paid")
        #expect(envelope.version == "2.0")
        #expect(abs(envelope.timestamp.timeIntervalSince1970 - 1_715_949_000.123) < 0.0005)
        #expect(envelope.data == Invoice(invoice: "INV-7", cents: 1250, lines: [.init(sku: "A", qty: 2)]))
        #expect(envelope.metadata.source == "py-billing")
        #expect(envelope.metadata.correlationID == "py-corr")
        #expect(envelope.metadata.userID == "u-42")
        #expect(envelope.metadata.extra == ["region": "eu"])

        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    static func pydantic(_ arguments: String...) async throws -> [[String: Any]] {
        let script = TestBroker.repositoryRoot().appendingPathComponent("scripts/interop/pydantic_envelopes.py").path
        let output = try await TestBroker.run("/usr/bin/env", ["python3", script] + arguments)
        return try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]], "\(output)")
    }

    struct Form: Codable, Sendable, Equatable {
        var form: String
    }

    /// Issue 13: what pydantic's `model_dump_json()` and `json.dumps(default=str)` write (naive
    /// and aware timestamps, a space or `T`, hex ids, metadata of every JSON type) decodes.
    @Test func envelopesPydanticAndJSONDumpsWriteDecode() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("envelope-from-pydantic"), durable: true)
        let sent = try await Self.pydantic("write", TestBroker.url, queue.name)
        #expect(sent.count == 6)
        for form in sent {
            let delivery = try #require(try await channel.get(queue: queue.name, autoAck: true))
            let body = try #require(form["body"] as? String)
            #expect(delivery.bodyString == body)
            do {
                let envelope = try delivery.envelope(Form.self)
                #expect(envelope.data == Form(form: try #require(form["form"] as? String)))
                #expect(envelope.id == UUID(uuidString: try #require(form["id"] as? String)), "\(body)")
                let milliseconds = try #require(form["epoch_ms"] as? Int)
                #expect(envelope.timestamp == Date(timeIntervalSince1970: Double(milliseconds) / 1000), "\(body)")
                let metadata = envelope.metadata
                #expect(metadata.source == "py-shop" && metadata.correlationID == nil && metadata.userID == nil)
                #expect(
                    metadata.extra == [
                        "user_id": 42, "attempt": 3, "ratio": 0.5, "urgent": true, "tags": ["a", 1], "origin": ["region": "eu"],
                    ], "\(body)")
            } catch {
                Issue.record("\(error): \(body)")
            }
        }
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    /// Issue 13: pydantic (strict) validates every envelope we publish, and reads the same id,
    /// instant and metadata, at the ends of the timestamp range too.
    @Test func pydanticValidatesWhatWePublish() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("envelope-to-pydantic"), durable: true)
        try await channel.confirmSelect()
        let metadata = RabbitMQEnvelopeMetadata(
            source: "swift-shop", correlationID: "c-1",
            extra: ["attempt": 2, "ratio": 1.25, "urgent": false, "tags": ["x", 3], "origin": ["zone": "eu-1"], "none": nil])
        let envelopes = [1_715_949_000.123, -62_135_596_800, 253_402_300_799.999].map { seconds in
            RabbitMQEnvelope(
                type: "shop.order.placed", data: Form(form: "swift"), version: "2.0", metadata: metadata,
                timestamp: Date(timeIntervalSince1970: seconds))
        }
        for envelope in envelopes { try await channel.publishConfirmed(envelope, routingKey: queue.name) }
        let results = try await Self.pydantic("validate", TestBroker.url, queue.name, "\(envelopes.count)")
        #expect(results.count == envelopes.count)
        for (envelope, result) in zip(envelopes, results) {
            #expect(result["ok"] as? Bool == true, "\(result)")
            #expect(result["id"] as? String == envelope.id.uuidString.lowercased())
            #expect(result["message_id"] as? String == envelope.id.uuidString.lowercased())
            #expect(result["epoch_ms"] as? Int == Int((envelope.timestamp.timeIntervalSince1970 * 1000).rounded()))
            #expect(result["aware"] as? Bool == true)
            #expect(result["version"] as? String == "2.0")
            let seen = try #require(result["metadata"] as? [String: Any])
            #expect(Set(seen.keys) == ["source", "correlation_id", "attempt", "ratio", "urgent", "tags", "origin"])
            #expect(seen["attempt"] as? Int == 2 && seen["ratio"] as? Double == 1.25 && seen["urgent"] as? Bool == false)
            #expect((seen["origin"] as? [String: String]) == ["zone": "eu-1"])
        }
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func aPikaClientCallsOurServer() async throws {
        let queue = TestBroker.uniqueName("rpc-for-pika")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        let server = RabbitMQRPCServer(connection: connection, queue: queue) { request in
            guard request.bodyString != "fail" else { throw RabbitMQPatternsError.permanentFailure("swift refuses") }
            return Array(String(request.bodyString.reversed()).utf8)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            #expect(try await Self.pika("rpc-call", TestBroker.url, queue, "stressed") == "desserts")
            let failure = try await Self.pika("rpc-call", TestBroker.url, queue, "fail")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(failure.utf8)) as? [String: Any])
            #expect(json["error"] as? String == "swift refuses")
            #expect(json["success"] as? Bool == false)
        }
        try await setup.queueDelete(queue)
        try await connection.close()
    }

    @Test func ourClientCallsAPikaServer() async throws {
        let queue = TestBroker.uniqueName("rpc-by-pika")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        // pika answers two requests and exits; our calls wait in the queue until it consumes.
        let pika = Task { try await Self.pika("rpc-serve", TestBroker.url, queue, "3") }
        try await RabbitMQRPCClient.withClient(connection: connection) { client in
            let reply = try await client.call(Array("hello pika".utf8), routingKey: queue)
            #expect(reply.bodyString == "HELLO PIKA")
            // An answer that says "success": false without the error header is an answer.
            let declined = try await client.call(Array("declined".utf8), routingKey: queue)
            #expect(declined.bodyString == #"{"success": false, "reason": "out of stock"}"#)
            let error = await #expect(throws: RabbitMQPatternsError.self) {
                try await client.call(Array("fail".utf8), routingKey: queue)
            }
            #expect(error?.code == .remoteError)
            #expect(error?.message == "pika refuses")
        }
        _ = try await pika.value
        try await setup.queueDelete(queue)
        try await connection.close()
    }
}
