/// The AMQP basic properties of a message. Every property is optional; only set ones are sent.
///
/// ```swift
/// var properties = RabbitMQProperties()
/// properties.contentType = "application/json"
/// properties.deliveryMode = .persistent
/// properties.headers = ["x-retry-count": 0]
/// ```
public struct RabbitMQProperties: Sendable, Hashable {
    /// Whether the broker writes a message to disk (on a durable queue).
    public struct DeliveryMode: Sendable, Hashable, CustomStringConvertible {
        /// The raw AMQP value: 1 transient, 2 persistent.
        public let rawValue: UInt8
        /// Creates a delivery mode from its raw AMQP value.
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Kept in memory only (1).
        public static let transient = DeliveryMode(rawValue: 1)
        /// Written to disk on durable queues (2).
        public static let persistent = DeliveryMode(rawValue: 2)
        public var description: String {
            switch rawValue {
            case 1: "transient"
            case 2: "persistent"
            default: "\(rawValue)"
            }
        }
    }

    /// MIME type of the body, for example `application/json`.
    public var contentType: String?
    /// Encoding of the body, for example `gzip`.
    public var contentEncoding: String?
    /// Application headers.
    public var headers: RabbitMQFieldTable?
    /// Transient or persistent.
    public var deliveryMode: DeliveryMode?
    /// Priority 0...9 (on queues declared with `x-max-priority`).
    public var priority: UInt8?
    /// Correlates a reply with its request.
    public var correlationID: String?
    /// Queue to send a reply to.
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as a decimal string (for example `"60000"`).
    public var expiration: String?
    /// Application message identifier.
    public var messageID: String?
    /// Seconds since the Unix epoch.
    public var timestamp: UInt64?
    /// Message type name.
    public var type: String?
    /// The publishing user; RabbitMQ rejects a value other than the connection's user.
    public var userID: String?
    /// The publishing application.
    public var appID: String?
    /// Deprecated in AMQP 0-9-1; carried for completeness.
    public var clusterID: String?

    /// Properties with nothing set.
    public init() {}

    /// Properties with the given values set.
    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: RabbitMQFieldTable? = nil,
        deliveryMode: DeliveryMode? = nil, priority: UInt8? = nil, correlationID: String? = nil,
        replyTo: String? = nil, expiration: String? = nil, messageID: String? = nil,
        timestamp: UInt64? = nil, type: String? = nil, userID: String? = nil, appID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.userID = userID
        self.appID = appID
    }
}
