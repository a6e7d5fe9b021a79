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
    static let id = UUID(uuid: (0x0d, 0x9f, 0x8a, 0x3e, 0x51, 0xc2, 0x4c, 0x1b, 0x9a, 0x47, 0x0f, 0x5b, 0x2a, 0x9c, 0x1e, 0x77))

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
            id: Self.id, timestamp: Date(timeIntervalSince1970: 1_715_949_000.123))
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
        #expect(envelope.id == Self.id)
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

    /// A timestamp that is not a number, or far beyond any calendar, is refused with a typed
    /// error, never a trap (review of issue 13: the conversion to milliseconds trapped).
    @Test(arguments: [Double.nan, .infinity, -.infinity, 1e300, -1e300])
    func aTimestampOutOfEveryRangeIsRefusedNotATrap(seconds: Double) {
        let envelope = RabbitMQEnvelope(type: "t", data: 1, timestamp: Date(timeIntervalSince1970: seconds))
        #expect(throws: RabbitMQPatternsError.self) { try envelope.encodedBody() }
        _ = envelope.properties(persistent: true, headers: nil)
    }

    @Test func unknownTopLevelKeysAreIgnored() throws {
        let body = try Self.body { $0["schema"] = "v9" }
        #expect(try RabbitMQEnvelope<Order>(decoding: body).type == "shop.order.placed")
    }

    @Test func propertiesComeFromTheEnvelope() {
        let envelope = RabbitMQEnvelope(
            type: "shop.order.placed", data: 1, metadata: RabbitMQEnvelopeMetadata(source: "shop", correlationID: "c-1", userID: "u"),
            id: Self.id, timestamp: Date(timeIntervalSince1970: 1_700_000_000.9))
        let properties = envelope.properties(headers: ["k": "v"])
        #expect(properties.contentType == "application/json")
        #expect(properties.contentEncoding == "utf-8")
        #expect(properties.deliveryMode == .persistent)
        #expect(properties.messageID == "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77")
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
        (-62_135_596_800, "0001-01-01T00:00:00.000Z"),
        (253_402_300_799.999, "9999-12-31T23:59:59.999Z"),
        (951_782_400, "2000-02-29T00:00:00.000Z"),
    ])
    func timestampsHaveMilliseconds(seconds: Double, text: String) {
        #expect(EnvelopeTimestamp.format(Date(timeIntervalSince1970: seconds)) == text)
    }

    /// Issue 13: every form Python writes a timestamp in. pydantic v2's `model_dump_json`
    /// writes `T`, microseconds and `Z` (aware) or no zone (naive); `json.dumps(default=str)`
    /// writes `str(datetime)`: a space, microseconds (none when zero) and `+00:00` or no zone.
    @Test(arguments: [
        ("2024-05-17T12:30:00.123456Z", 1_715_949_000.123),  // pydantic, aware UTC
        ("2024-05-17T12:30:00.123456", 1_715_949_000.123),  // pydantic, naive
        ("2024-05-17T12:30:00", 1_715_949_000.0),  // pydantic, naive, no microseconds
        ("2024-05-17 12:30:00.123456+00:00", 1_715_949_000.123),  // str(datetime), aware
        ("2024-05-17 12:30:00.123456", 1_715_949_000.123),  // str(datetime), naive
        ("2024-05-17 12:30:00", 1_715_949_000.0),  // str(datetime) with no microseconds
        ("2024-05-17 14:30:00+02:00", 1_715_949_000.0),
        ("2024-05-17T07:30:00.5-05:00", 1_715_949_000.5),
        ("2024-05-17T14:30:00+0200", 1_715_949_000.0),
        ("2024-05-17T14:30:00+02", 1_715_949_000.0),
        ("2024-05-17t12:30:00.123456789z", 1_715_949_000.123),  // nanoseconds, lowercase
        ("2024-05-17T12:30:00.0005Z", 1_715_949_000.001),  // rounds half up to the millisecond
        ("2024-02-29T00:00:00Z", 1_709_164_800.0),
        ("1969-12-31T23:59:59.750Z", -0.25),
    ])
    func readsEveryTimestampForm(text: String, seconds: Double) throws {
        let envelope = try RabbitMQEnvelope<Order>(decoding: Self.body { $0["timestamp"] = text })
        #expect(envelope.timestamp == Date(timeIntervalSince1970: seconds))
    }

    @Test(arguments: [
        "2024-05-17", "2024-05-17T12:30", "2024-05-17T12:30:00.", "2024-05-17T12:30:00.1234567890Z",
        "2023-02-29T00:00:00Z", "2024-05-17T24:00:00Z", "2024-05-17T12:30:60Z", "2024-05-17T12:30:00+2",
        "2024-05-17T12:30:00Z ", "2024-05-17  12:30:00", "24-05-17T12:30:00Z", "2024-05-17T12:30:00+02:00:00",
    ])
    func refusesWhatIsNotADateTime(text: String) throws {
        let error = #expect(throws: RabbitMQPatternsError.self) {
            try RabbitMQEnvelope<Order>(decoding: Self.body { $0["timestamp"] = text })
        }
        #expect(error?.field == "timestamp")
    }

    /// `str(uuid)` (and pydantic) write hyphens, `uuid.hex` none; either case.
    @Test(arguments: [
        "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77", "0D9F8A3E-51C2-4C1B-9A47-0F5B2A9C1E77",
        "0d9f8a3e51c24c1b9a470f5b2a9c1e77", "0D9F8A3E51C24C1B9A470F5B2A9C1E77",
    ])
    func readsUUIDsWithOrWithoutHyphens(text: String) throws {
        let envelope = try RabbitMQEnvelope<Order>(decoding: Self.body { $0["id"] = text })
        #expect(envelope.id == Self.id)
        #expect(try Self.json(envelope.encodedBody())["id"] as? String == "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77")
    }

    @Test(arguments: ["0d9f8a3e51c24c1b9a470f5b2a9c1e7", "0d9f8a3e51c24c1b9a470f5b2a9c1e7g", "0d9f8a3e-51c24c1b9a470f5b2a9c1e77"])
    func refusesWhatIsNotAUUID(text: String) throws {
        let error = #expect(throws: RabbitMQPatternsError.self) {
            try RabbitMQEnvelope<Order>(decoding: Self.body { $0["id"] = text })
        }
        #expect(error?.field == "id")
    }

    /// Metadata as a Python `dict[str, Any]` writes it: every JSON type, nulls read as absent,
    /// and a known key holding no string kept as an extra entry.
    @Test func metadataOfEveryJSONType() throws {
        let body = try Self.body {
            $0["metadata"] = [
                "source": "py-shop", "correlation_id": NSNull(), "user_id": 42, "attempt": 3, "ratio": 0.5,
                "urgent": true, "note": NSNull(), "tags": ["a", 1, false], "origin": ["region": "eu", "zone": 2],
            ] as [String: Any]
        }
        let envelope = try RabbitMQEnvelope<Order>(decoding: body)
        let metadata = envelope.metadata
        #expect(metadata.source == "py-shop")
        #expect(metadata.correlationID == nil)
        #expect(metadata.userID == nil, "not a string")
        #expect(metadata.entries["user_id"] == 42)
        #expect(metadata.extra["attempt"]?.intValue == 3)
        #expect(metadata.extra["ratio"]?.doubleValue == 0.5)
        #expect(metadata.extra["urgent"]?.boolValue == true)
        #expect(metadata.extra["tags"] == ["a", 1, false])
        #expect(metadata.extra["origin"]?.objectValue?["region"]?.stringValue == "eu")
        #expect(metadata["attempt"] == nil, "the string subscript reads strings only")
        #expect(Set(metadata.extra.keys) == ["user_id", "attempt", "ratio", "urgent", "tags", "origin"])
        let decoded = try RabbitMQEnvelope<Order>(decoding: envelope.encodedBody())
        #expect(decoded == envelope)
        let json = try #require(try Self.json(envelope.encodedBody())["metadata"] as? [String: Any])
        #expect(json["note"] == nil && json["correlation_id"] == nil)
        #expect(json["attempt"] as? Int == 3 && json["urgent"] as? Bool == true)
    }

    @Test func metadataNeverHoldsANull() {
        var metadata = RabbitMQEnvelopeMetadata(source: "s", extra: ["a": nil, "b": 1])
        #expect(metadata.extra == ["b": 1])
        metadata.extra["b"] = .null
        metadata.entries["c"] = nil
        metadata.entries["d"] = .null
        metadata.source = nil
        #expect(metadata.entries.isEmpty)
        metadata.extra = ["source": "from-extra", "user_id": 7]
        #expect(metadata.source == "from-extra" && metadata.userID == nil)
        #expect(metadata.extra == ["user_id": 7])
        metadata.userID = "u"
        #expect(metadata.extra.isEmpty && metadata.entries == ["source": "from-extra", "user_id": "u"])
    }

    /// Encoding refuses what decoding would refuse, naming the field.
    @Test func encodingRefusesWhatDecodingWould() throws {
        let cases: [(RabbitMQEnvelope<Int>, String)] = [
            (RabbitMQEnvelope(type: "", data: 1), "type"),
            (RabbitMQEnvelope(type: "t", data: 1, timestamp: Date(timeIntervalSince1970: 253_402_300_800)), "timestamp"),
            (RabbitMQEnvelope(type: "t", data: 1, timestamp: Date(timeIntervalSince1970: -62_135_596_801)), "timestamp"),
            (RabbitMQEnvelope(type: "t", data: 1, metadata: .init(extra: ["x": .double(.infinity)])), "metadata.x"),
        ]
        for (envelope, field) in cases {
            let error = #expect(throws: RabbitMQPatternsError.self) { try envelope.encodedBody() }
            #expect(error?.field == field, "\(String(describing: error))")
            #expect(throws: (any Error).self) { try JSONEncoder().encode(envelope) }
        }
        // The first and last instants that encode, and read back.
        for seconds in [-62_135_596_800.0, 253_402_300_799.999] {
            let envelope = RabbitMQEnvelope(type: "t", data: 1, timestamp: Date(timeIntervalSince1970: seconds))
            #expect(try RabbitMQEnvelope<Int>(decoding: envelope.encodedBody()) == envelope)
        }
    }
}
