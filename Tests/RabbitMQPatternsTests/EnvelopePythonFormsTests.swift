import Foundation
import RabbitMQPatterns
import Testing

/// Issue 13: envelopes exactly as Python writes them for the seed's `MessageEnvelope` model
/// (id, timestamp, version, type, data, metadata: `dict[str, Any]`). Written against what
/// both the old and the new envelope API offer, so it ran red before the fix.
@Suite("Envelope: Python's forms")
struct EnvelopePythonFormsTests {
    struct Payload: Codable, Sendable, Equatable {
        var orderID: Int
    }

    /// pydantic v2 `model_dump_json()`: aware UTC datetime as `...123456Z`, `None` as null,
    /// metadata values of any type.
    static let pydantic = #"""
        {"id":"0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77","timestamp":"2024-05-17T12:30:00.123456Z","version":"1.0","type":"shop.order.placed","data":{"orderID":7},"metadata":{"source":"py","correlation_id":null,"user_id":null,"attempt":2,"tags":["x"],"origin":{"zone":1}}}
        """#
    /// pydantic v2 with a naive datetime: no zone at all.
    static let pydanticNaive = #"""
        {"id":"0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77","timestamp":"2024-05-17T12:30:00.123456","version":"1.0","type":"shop.order.placed","data":{"orderID":7},"metadata":{"source":"py","urgent":true}}
        """#
    /// `json.dumps(envelope, default=str)`: `str(datetime)` (a space, `+00:00`), `str(uuid)`.
    static let dumps = #"""
        {"id": "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77", "timestamp": "2024-05-17 12:30:00.123456+00:00", "version": "1.0", "type": "shop.order.placed", "data": {"orderID": 7}, "metadata": {"source": "py", "debug": false, "score": 1.5}}
        """#
    /// `json.dumps` of a dict built with `uuid.hex` and a naive `str(datetime)`.
    static let dumpsHex = #"""
        {"id": "0d9f8a3e51c24c1b9a470f5b2a9c1e77", "timestamp": "2024-05-17 12:30:00.123456", "version": "1.0", "type": "shop.order.placed", "data": {"orderID": 7}, "metadata": {"source": "py", "note": null}}
        """#

    @Test(arguments: [pydantic, pydanticNaive, dumps, dumpsHex])
    func readsWhatPythonWrites(text: String) throws {
        let envelope = try RabbitMQEnvelope<Payload>(decoding: Array(text.utf8))
        #expect("\(envelope.id)".lowercased() == "0d9f8a3e-51c2-4c1b-9a47-0f5b2a9c1e77")
        #expect(envelope.timestamp == Date(timeIntervalSince1970: 1_715_949_000.123))
        #expect(envelope.metadata.source == "py")
        #expect(envelope.data == Payload(orderID: 7))
        let again = try RabbitMQEnvelope<Payload>(decoding: envelope.encodedBody())
        #expect(again == envelope)
    }

    struct OrderPlaced: Codable, Sendable {
        var orderID: Int
        var cents: Int
    }

    /// The sample of the Envelopes article's "What other languages write".
    @Test func theArticleSample() throws {
        let body = Array(#"{"id": "0d9f8a3e51c24c1b9a470f5b2a9c1e77", "timestamp": "2024-05-17 12:30:00.123456", "version": "1.0", "type": "shop.order.placed", "data": {"orderID": 42, "cents": 1999}, "metadata": {"source": "py-shop", "correlation_id": null, "attempt": 2, "tags": ["new"]}}"#.utf8)
        var envelope = try RabbitMQEnvelope<OrderPlaced>(decoding: body)
        print(envelope.metadata.source ?? "-")  // "py-shop"
        print(envelope.metadata.extra["attempt"]?.intValue ?? 0)  // 2
        envelope.metadata["tenant"] = "acme"  // a string entry
        envelope.metadata.extra["tags"] = ["new", "vip"]  // any JSON value

        #expect(envelope.metadata.source == "py-shop" && envelope.metadata.correlationID == nil)
        #expect(envelope.metadata.entries == ["source": "py-shop", "attempt": 2, "tags": ["new", "vip"], "tenant": "acme"])
        #expect(envelope.data.orderID == 42)
    }
}
