/// The `metadata` object of a ``RabbitMQEnvelope``: who sent it, what it correlates with,
/// on whose behalf, and free-form string entries.
///
/// In JSON the known entries are `source`, `correlation_id` and `user_id`; every other key is
/// an ``extra`` entry. Absent entries are omitted, and `null` reads as absent.
///
/// ```swift
/// var metadata = RabbitMQEnvelopeMetadata(source: "billing", correlationID: request.id)
/// metadata["tenant"] = "acme"
/// ```
public struct RabbitMQEnvelopeMetadata: Sendable, Hashable {
    /// The service that produced the envelope (`source`); published as the AMQP app-id.
    public var source: String?
    /// Correlates the envelope with a request or a conversation (`correlation_id`); published
    /// as the AMQP correlation-id.
    public var correlationID: String?
    /// The user the envelope acts for (`user_id`). Not copied to the AMQP user-id, which
    /// RabbitMQ requires to equal the connection's user.
    public var userID: String?
    /// Free-form string entries (every key other than the three above).
    public var extra: [String: String]

    /// Creates metadata; every entry is optional.
    public init(
        source: String? = nil, correlationID: String? = nil, userID: String? = nil, extra: [String: String] = [:]
    ) {
        self.source = source
        self.correlationID = correlationID
        self.userID = userID
        self.extra = extra.filter { !Self.knownKeys.contains($0.key) }
        for key in Self.knownKeys { if let value = extra[key] { self[key] = value } }
    }

    /// Any entry by its JSON key, the known ones (`source`, `correlation_id`, `user_id`) included.
    public subscript(key: String) -> String? {
        get {
            switch key {
            case "source": source
            case "correlation_id": correlationID
            case "user_id": userID
            default: extra[key]
            }
        }
        set {
            switch key {
            case "source": source = newValue
            case "correlation_id": correlationID = newValue
            case "user_id": userID = newValue
            default: extra[key] = newValue
            }
        }
    }

    static let knownKeys: Set<String> = ["source", "correlation_id", "user_id"]
}

extension RabbitMQEnvelopeMetadata: Codable {
    /// Reads a metadata object: every value must be a string (or null, read as absent).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: DynamicCodingKey.self)
        self.init()
        for key in container.allKeys {
            // Any string value is accepted, so a newer producer's extra entries never break us.
            if try container.decodeNil(forKey: key) { continue }
            self[key.stringValue] = try container.decode(String.self, forKey: key)
        }
    }

    /// Writes the known entries, then the extra ones, omitting absent ones.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: DynamicCodingKey.self)
        try container.encodeIfPresent(source, forKey: DynamicCodingKey("source"))
        try container.encodeIfPresent(correlationID, forKey: DynamicCodingKey("correlation_id"))
        try container.encodeIfPresent(userID, forKey: DynamicCodingKey("user_id"))
        for key in extra.keys.sorted() {
            try container.encode(extra[key], forKey: DynamicCodingKey(key))
        }
    }
}
