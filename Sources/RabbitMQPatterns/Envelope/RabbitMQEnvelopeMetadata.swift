/// The `metadata` object of a ``RabbitMQEnvelope``: who sent it, what it correlates with, on
/// whose behalf, and free-form entries of any JSON type.
///
/// In JSON the known entries are `source`, `correlation_id` and `user_id`, read through
/// ``source``, ``correlationID`` and ``userID`` when they are strings. Every other entry (and
/// a known one that another language wrote as a number or an object) is in ``extra``. Strings
/// stay easy to read: `metadata["tenant"]` is the entry as a `String?`; ``entries`` has every
/// entry as a ``RabbitMQJSONValue``. `null` reads as absent, and storing `nil` or
/// ``RabbitMQJSONValue/null`` removes an entry, so metadata never holds a null.
///
/// ```swift
/// var metadata = RabbitMQEnvelopeMetadata(source: "billing", correlationID: request.id)
/// metadata["tenant"] = "acme"
/// metadata.extra["attempt"] = 3
/// ```
public struct RabbitMQEnvelopeMetadata: Sendable, Hashable {
    /// Every entry by its JSON key, the known ones included; never a null (storing one removes
    /// the entry).
    public var entries: [String: RabbitMQJSONValue] {
        get { storage }
        set { storage = newValue.filter { !$0.value.isNull } }
    }

    private var storage: [String: RabbitMQJSONValue] = [:]

    /// The service that produced the envelope (`source`); published as the AMQP app-id.
    public var source: String? {
        get { self["source"] }
        set { self["source"] = newValue }
    }
    /// Correlates the envelope with a request or a conversation (`correlation_id`); published
    /// as the AMQP correlation-id.
    public var correlationID: String? {
        get { self["correlation_id"] }
        set { self["correlation_id"] = newValue }
    }
    /// The user the envelope acts for (`user_id`). Not copied to the AMQP user-id, which
    /// RabbitMQ requires to equal the connection's user.
    public var userID: String? {
        get { self["user_id"] }
        set { self["user_id"] = newValue }
    }

    /// Free-form entries: every entry but the known ones that are strings (those are
    /// ``source``, ``correlationID`` and ``userID``). Setting it replaces those entries; a
    /// known key in it that holds a string sets that property.
    public var extra: [String: RabbitMQJSONValue] {
        get { storage.filter { !Self.isKnownString($0.key, $0.value) } }
        set {
            storage = storage.filter { Self.isKnownString($0.key, $0.value) }
            for (key, value) in newValue where !value.isNull { storage[key] = value }
        }
    }

    /// Creates metadata; every entry is optional. A known key in `extra` holding a string sets
    /// that property unless the parameter for it is given.
    public init(
        source: String? = nil, correlationID: String? = nil, userID: String? = nil,
        extra: [String: RabbitMQJSONValue] = [:]
    ) {
        self.extra = extra
        if let source { self.source = source }
        if let correlationID { self.correlationID = correlationID }
        if let userID { self.userID = userID }
    }

    /// An entry as a string, by its JSON key (known ones included): nil when absent or not a
    /// string. Setting a string stores it; setting nil removes the entry.
    public subscript(key: String) -> String? {
        get { storage[key]?.stringValue }
        set { storage[key] = newValue.map { .string($0) } }
    }

    static let knownKeys: Set<String> = ["source", "correlation_id", "user_id"]

    private static func isKnownString(_ key: String, _ value: RabbitMQJSONValue) -> Bool {
        knownKeys.contains(key) && value.stringValue != nil
    }
}

extension RabbitMQEnvelopeMetadata: Codable {
    /// Reads a metadata object: values of any JSON type; `null` reads as absent.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: DynamicCodingKey.self)
        self.init()
        for key in container.allKeys {
            let value = try container.decode(RabbitMQJSONValue.self, forKey: key)
            if !value.isNull { storage[key.stringValue] = value }
        }
    }

    /// Writes every entry, keys sorted.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: DynamicCodingKey.self)
        for key in storage.keys.sorted() {
            try container.encode(storage[key], forKey: DynamicCodingKey(key))
        }
    }
}
