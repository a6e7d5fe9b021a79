import Foundation

/// A typed message that services in any language can read and write: JSON of exactly
/// `{"id", "timestamp", "version", "type", "data", "metadata"}`.
///
/// ```json
/// {"id": "9b2c1f0e-…", "timestamp": "2024-05-17T12:30:00.123Z", "version": "1.0",
///  "type": "orders.order.created", "data": {"orderId": 42},
///  "metadata": {"source": "shop", "correlation_id": "c-1"}}
/// ```
///
/// - `id`: a UUID string (lowercase when we create it).
/// - `timestamp`: ISO-8601 in UTC, millisecond precision.
/// - `version`: the schema version of `data`, a string.
/// - `type`: the event type, by convention `service.entity.action`.
/// - `data`: the payload, encoded with `JSONEncoder` (dates as ISO-8601 strings).
/// - `metadata`: see ``RabbitMQEnvelopeMetadata``.
///
/// Decoding validates every field and throws ``RabbitMQPatternsError`` with code
/// `invalidEnvelope` and the ``RabbitMQPatternsError/field`` that is missing or mistyped.
/// Unknown top-level keys are ignored, so a newer producer does not break an older consumer.
///
/// ```swift
/// struct OrderCreated: Codable, Sendable { var orderID: Int }
/// let envelope = RabbitMQEnvelope(type: "shop.order.created", data: OrderCreated(orderID: 42))
/// try await channel.publish(envelope, exchange: "shop", routingKey: envelope.type)
/// ```
public struct RabbitMQEnvelope<Payload: Codable & Sendable>: Sendable {
    /// A UUID string identifying this envelope; published as the AMQP message-id.
    public var id: String
    /// When the event happened (kept to the millisecond); published as the AMQP timestamp (seconds).
    public var timestamp: Date
    /// The schema version of ``data``. Default: `"1.0"`.
    public var version: String
    /// The event type, for example `shop.order.created`; published as the AMQP type.
    public var type: String
    /// The payload.
    public var data: Payload
    /// Source, correlation id, user id and free-form entries.
    public var metadata: RabbitMQEnvelopeMetadata

    /// Creates an envelope with a new random id, stamped now unless told otherwise.
    ///
    /// - Parameters:
    ///   - type: The event type, for example `shop.order.created`; must not be empty.
    ///   - data: The payload.
    ///   - version: The payload's schema version. Default: `"1.0"`.
    ///   - metadata: Source, correlation id, user id, extra entries. Default: none.
    ///   - id: A UUID string. Default: a new random UUID, lowercase.
    ///   - timestamp: When it happened. Default: now.
    public init(
        type: String, data: Payload, version: String = "1.0", metadata: RabbitMQEnvelopeMetadata = .init(),
        id: String = UUID().uuidString.lowercased(), timestamp: Date = Date()
    ) {
        self.id = id
        self.timestamp = EnvelopeTimestamp.normalized(timestamp)
        self.version = version
        self.type = type
        self.data = data
        self.metadata = metadata
    }
}

extension RabbitMQEnvelope: Equatable where Payload: Equatable {}
extension RabbitMQEnvelope: Hashable where Payload: Hashable {}

extension RabbitMQEnvelope: Codable {
    private enum CodingKeys: String, CodingKey {
        case id, timestamp, version, type, data, metadata
    }

    /// Decodes and validates an envelope; prefer ``init(decoding:)``, which reports problems
    /// as ``RabbitMQPatternsError``.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        guard UUID(uuidString: id) != nil else {
            throw DecodingError.dataCorruptedError(forKey: .id, in: container, debugDescription: "'\(id)' is not a UUID")
        }
        let stamp = try container.decode(String.self, forKey: .timestamp)
        guard let date = EnvelopeTimestamp.parse(stamp) else {
            throw DecodingError.dataCorruptedError(
                forKey: .timestamp, in: container, debugDescription: "'\(stamp)' is not an ISO-8601 date-time")
        }
        timestamp = date
        version = try container.decode(String.self, forKey: .version)
        type = try container.decode(String.self, forKey: .type)
        guard !type.isEmpty else {
            throw DecodingError.dataCorruptedError(forKey: .type, in: container, debugDescription: "is empty")
        }
        data = try container.decode(Payload.self, forKey: .data)
        metadata = try container.decode(RabbitMQEnvelopeMetadata.self, forKey: .metadata)
    }

    /// Encodes the envelope; ``encodedBody()`` also fixes the order of the keys.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(EnvelopeTimestamp.format(timestamp), forKey: .timestamp)
        try container.encode(version, forKey: .version)
        try container.encode(type, forKey: .type)
        try container.encode(data, forKey: .data)
        try container.encode(metadata, forKey: .metadata)
    }
}
