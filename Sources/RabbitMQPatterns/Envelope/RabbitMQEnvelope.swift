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
/// - `id`: a UUID, written lowercase with hyphens; read with or without hyphens (Python's
///   `str(uuid)` and `uuid.hex`), in either case.
/// - `timestamp`: written ISO-8601 in UTC with milliseconds; read with `T` or a space,
///   0 to 9 fractional digits and any zone offset, or none, which means UTC (what pydantic
///   and `json.dumps(..., default=str)` write for a naive `datetime`).
/// - `version`: the schema version of `data`, a string.
/// - `type`: the event type, by convention `service.entity.action`.
/// - `data`: the payload, encoded with `JSONEncoder` (dates as ISO-8601 strings).
/// - `metadata`: an object of entries of any JSON type; see ``RabbitMQEnvelopeMetadata``.
///
/// Decoding validates every field and throws ``RabbitMQPatternsError`` with code
/// `invalidEnvelope` and the ``RabbitMQPatternsError/field`` that is missing or mistyped.
/// Unknown top-level keys are ignored, so a newer producer does not break an older consumer.
/// Encoding refuses what decoding would refuse (an empty `type`, a timestamp outside the
/// years 1 to 9999, a payload number that is not finite), so every envelope we publish reads
/// back, here and in other languages.
///
/// ```swift
/// struct OrderCreated: Codable, Sendable { var orderID: Int }
/// let envelope = RabbitMQEnvelope(type: "shop.order.created", data: OrderCreated(orderID: 42))
/// try await channel.publish(envelope, exchange: "shop", routingKey: envelope.type)
/// ```
public struct RabbitMQEnvelope<Payload: Codable & Sendable>: Sendable {
    /// Identifies this envelope; published as the AMQP message-id (lowercase, with hyphens).
    public var id: UUID
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
    ///   - type: The event type, for example `shop.order.created`; must not be empty (an
    ///     envelope with an empty type does not encode).
    ///   - data: The payload.
    ///   - version: The payload's schema version. Default: `"1.0"`.
    ///   - metadata: Source, correlation id, user id, extra entries. Default: none.
    ///   - id: The envelope's id. Default: a new random UUID.
    ///   - timestamp: When it happened. Default: now.
    public init(
        type: String, data: Payload, version: String = "1.0", metadata: RabbitMQEnvelopeMetadata = .init(),
        id: UUID = UUID(), timestamp: Date = Date()
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
        let idText = try container.decode(String.self, forKey: .id)
        guard let id = Self.uuid(idText) else {
            throw DecodingError.dataCorruptedError(
                forKey: .id, in: container, debugDescription: "'\(idText)' is not a UUID")
        }
        self.id = id
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
    ///
    /// - Throws: `EncodingError.invalidValue` for what decoding would refuse: an empty type or
    ///   a timestamp outside the years 1 to 9999.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try validateForEncoding(codingPath: encoder.codingPath)
        try container.encode(id.uuidString.lowercased(), forKey: .id)
        try container.encode(EnvelopeTimestamp.format(timestamp), forKey: .timestamp)
        try container.encode(version, forKey: .version)
        try container.encode(type, forKey: .type)
        try container.encode(data, forKey: .data)
        try container.encode(metadata, forKey: .metadata)
    }
}

extension RabbitMQEnvelope {
    /// A UUID in the canonical form (any case) or as 32 hex digits without hyphens (Python's
    /// `uuid.hex`).
    static func uuid(_ text: String) -> UUID? {
        if let uuid = UUID(uuidString: text) { return uuid }
        let hex = Array(text.utf8)
        guard hex.count == 32, hex.allSatisfy({ $0 < 0x80 && Character(UnicodeScalar($0)).isHexDigit }) else {
            return nil
        }
        var canonical = ""
        for (index, byte) in hex.enumerated() {
            if [8, 12, 16, 20].contains(index) { canonical += "-" }
            canonical.append(Character(UnicodeScalar(byte)))
        }
        return UUID(uuidString: canonical)
    }

    /// Throws for what ``init(from:)`` would refuse and the types cannot rule out.
    func validateForEncoding(codingPath: [any CodingKey]) throws {
        guard !type.isEmpty else {
            throw EncodingError.invalidValue(
                type, .init(codingPath: codingPath + [CodingKeys.type], debugDescription: "the type is empty"))
        }
        guard EnvelopeTimestamp.isEncodable(timestamp) else {
            throw EncodingError.invalidValue(
                timestamp,
                .init(codingPath: codingPath + [CodingKeys.timestamp], debugDescription: "not within the years 1 to 9999"))
        }
    }
}
