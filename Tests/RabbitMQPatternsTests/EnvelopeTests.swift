import Foundation
import RabbitMQ
import Testing

@testable import RabbitMQPatterns

struct Item: Codable, Sendable, Equatable {
    var sku: String
    var quantity: Int
}

struct Order: Codable, Sendable, Equatable {
    var orderID: Int
    var amount: Double
    var placedAt: Date
    var items: [Item]
}

@Suite("Envelope")
struct EnvelopeTests {
    static let order = Order(
        orderID: 42, amount: 12.5, placedAt: Date(timeIntervalSince1970: 1_715_949_000.25),
        items: [Item(sku: "A-1", quantity: 2)])

    static func json(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    /// A valid envelope as another language would write it, with `edit` applied.
    static func body(_ edit: (inout [String: Any]) -> Void = { _ in }) throws -> [UInt8] {
        var object: [String: Any] = [
            "id": "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77",
            "timestamp": "2024-05-17T12:30:00.123456+00:00",
            "version": "2.1",
            "type": "shop.order.placed",
            "data": ["orderID": 7, "amount": 3.25, "placedAt": "2024-05-17T12:29:59Z", "items": [["sku": "B", "quantity": 1]]],
            "metadata": ["source": "py-shop", "correlation_id": "c-9", "user_id": "u-1", "tenant": "acme"],
        ]
        edit(&object)
        return Array(try JSONSerialization.data(withJSONObject: object))
    }

    @Test func encodesExactlyTheSixKeysInOrder() throws {
        let envelope = RabbitMQEnvelope(
            type: "shop.order.placed", data: Self.order,
            metadata: RabbitMQEnvelopeMetadata(source: "shop", correlationID: "c-1", userID: "u-7", extra: ["tenant": "acme"]),
            id: "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77", timestamp: Date(timeIntervalSince1970: 1_715_949_000.123))
        let body = try envelope.encodedBody()
        let text = String(decoding: body, as: UTF8.self)
        #expect(text.hasPrefix(#"{"id":"0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77","timestamp":"2024-05-17T12:30:00.123Z","version":"1.0","type":"shop.order.placed","data":{"#))

        let json = try Self.json(body)
        #expect(Set(json.keys) == ["id", "timestamp", "version", "type", "data", "metadata"])
        let metadata = try #require(json["metadata"] as? [String: String])
        #expect(metadata == ["source": "shop", "correlation_id": "c-1", "user_id": "u-7", "tenant": "acme"])
        let data = try #require(json["data"] as? [String: Any])
        #expect(data["orderID"] as? Int == 42)
        #expect(data["placedAt"] as? String == "2024-05-17T12:30:00.250Z", "payload dates are ISO-8601 too")
        #expect(!text.contains(#"\/"#))
    }

    @Test func absentMetadataEntriesAreOmitted() throws {
        let json = try Self.json(RabbitMQEnvelope(type: "t", data: 1).encodedBody())
        #expect((json["metadata"] as? [String: Any])?.isEmpty == true)
        #expect(UUID(uuidString: json["id"] as? String ?? "") != nil)
        #expect((json["id"] as? String) == (json["id"] as? String)?.lowercased())
    }

    @Test func roundTripsExactly() throws {
        let envelope = RabbitMQEnvelope(
            type: "shop.order.placed", data: Self.order, version: "3",
            metadata: RabbitMQEnvelopeMetadata(source: "shop", extra: ["a": "b"]))
        let decoded = try RabbitMQEnvelope<Order>(decoding: envelope.encodedBody())
        #expect(decoded == envelope)
    }

    @Test func readsWhatPythonWrites() throws {
        let envelope = try RabbitMQEnvelope<Order>(decoding: Self.body())
        #expect(envelope.id == "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77")
        #expect(envelope.version == "2.1")
        #expect(envelope.type == "shop.order.placed")
        #expect(abs(envelope.timestamp.timeIntervalSince1970 - 1_715_949_000.123) < 0.0005)
        #expect(envelope.data.items == [Item(sku: "B", quantity: 1)])
        #expect(envelope.metadata.source == "py-shop")
        #expect(envelope.metadata.correlationID == "c-9")
        #expect(envelope.metadata.userID == "u-1")
        #expect(envelope.metadata["tenant"] == "acme")
        #expect(envelope.metadata.extra == ["tenant": "acme"])
    }

    @Test(arguments: [
        ("2024-05-17T12:30:00Z", 1_715_949_000.0),
        ("2024-05-17T14:30:00.5+02:00", 1_715_949_000.5),
        ("2024-05-17T12:30:00.123456", 1_715_949_000.123),  // Python's utcnow().isoformat(): no zone
    ])
    func acceptsTimestampForms(text: String, seconds: Double) throws {
        let body = try Self.body { $0["timestamp"] = text }
        let envelope = try RabbitMQEnvelope<Order>(decoding: body)
        #expect(abs(envelope.timestamp.timeIntervalSince1970 - seconds) < 0.0005)
    }

    @Test(arguments: ["id", "timestamp", "version", "type", "data", "metadata"])
    func aMissingFieldIsNamed(field: String) throws {
        let body = try Self.body { $0[field] = nil }
        let error = #expect(throws: RabbitMQPatternsError.self) { try RabbitMQEnvelope<Order>(decoding: body) }
        #expect(error?.code == .invalidEnvelope)
        #expect(error?.field == field)
        #expect(error?.message.contains(field) == true)
    }

    @Test(arguments: [
        ("id", #""not-a-uuid""#, "id"),
        ("id", "17", "id"),
        ("timestamp", #""yesterday""#, "timestamp"),
        ("version", "1", "version"),
        ("type", #""""#, "type"),
        ("data", #"{"orderID": "seven", "amount": 1, "placedAt": "2024-05-17T12:29:59Z", "items": []}"#, "data.orderID"),
        ("data", #"{"orderID": 7, "amount": 1, "placedAt": "2024-05-17T12:29:59Z", "items": [{"sku": "B"}]}"#,
         "data.items[0].quantity"),
        ("data", #"{"orderID": 7, "amount": 1, "placedAt": "noon", "items": []}"#, "data.placedAt"),
        ("metadata", #"{"source": 3}"#, "metadata.source"),
        ("metadata", #""none""#, "metadata"),
    ])
    func aMistypedFieldIsNamed(key: String, json: String, field: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        let body = try Self.body { $0[key] = value }
        let error = #expect(throws: RabbitMQPatternsError.self) { try RabbitMQEnvelope<Order>(decoding: body) }
        #expect(error?.code == .invalidEnvelope)
        #expect(error?.field == field, "\(String(describing: error))")
    }

    @Test(arguments: ["{not json", "[1, 2]", "", "\"text\""])
    func notAnObjectHasNoField(text: String) {
        let error = #expect(throws: RabbitMQPatternsError.self) { try RabbitMQEnvelope<Order>(decoding: Array(text.utf8)) }
        #expect(error?.code == .invalidEnvelope)
        #expect(error?.field == nil)
    }

    @Test func anUnencodablePayloadIsATypedError() {
        struct Reading: Codable, Sendable { var value: Double }
        let envelope = RabbitMQEnvelope(type: "sensor.read", data: Reading(value: .nan))
        let error = #expect(throws: RabbitMQPatternsError.self) { try envelope.encodedBody() }
        #expect(error?.field == "data.value")
    }

    @Test func unknownTopLevelKeysAreIgnored() throws {
        let body = try Self.body { $0["schema"] = "v9" }
        #expect(try RabbitMQEnvelope<Order>(decoding: body).type == "shop.order.placed")
    }

    @Test func propertiesComeFromTheEnvelope() {
        let envelope = RabbitMQEnvelope(
            type: "shop.order.placed", data: 1, metadata: RabbitMQEnvelopeMetadata(source: "shop", correlationID: "c-1", userID: "u"),
            id: "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77", timestamp: Date(timeIntervalSince1970: 1_700_000_000.9))
        let properties = envelope.properties(headers: ["k": "v"])
        #expect(properties.contentType == "application/json")
        #expect(properties.contentEncoding == "utf-8")
        #expect(properties.deliveryMode == .persistent)
        #expect(properties.messageID == envelope.id)
        #expect(properties.type == "shop.order.placed")
        #expect(properties.timestamp == 1_700_000_000)
        #expect(properties.correlationID == "c-1")
        #expect(properties.appID == "shop")
        #expect(properties.userID == nil, "RabbitMQ refuses a user-id other than the connection's")
        #expect(properties.headers == ["k": "v"])
        #expect(envelope.properties(persistent: false).deliveryMode == .transient)
    }

    @Test func metadataSubscriptReachesKnownAndExtraEntries() {
        var metadata = RabbitMQEnvelopeMetadata(extra: ["source": "from-extra", "x": "1"])
        #expect(metadata.source == "from-extra")
        #expect(metadata.extra == ["x": "1"])
        metadata["correlation_id"] = "c"
        metadata["y"] = "2"
        #expect(metadata.correlationID == "c")
        #expect(metadata.extra == ["x": "1", "y": "2"])
    }

    @Test(arguments: [
        (1_715_949_000.123, "2024-05-17T12:30:00.123Z"),
        (1_715_949_000.0, "2024-05-17T12:30:00.000Z"),
        (1_715_949_000.9996, "2024-05-17T12:30:01.000Z"),
        (-0.25, "1969-12-31T23:59:59.750Z"),
    ])
    func timestampsHaveMilliseconds(seconds: Double, text: String) {
        #expect(EnvelopeTimestamp.format(Date(timeIntervalSince1970: seconds)) == text)
    }
}
