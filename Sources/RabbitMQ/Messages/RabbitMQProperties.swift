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

    /// The fields live in one copy-on-write box, so a message's properties cost one reference
    /// count to copy (they travel with every publish and delivery) instead of a dozen. Empty
    /// properties share one box: building them allocates nothing.
    private(set) var storage: Storage

    /// MIME type of the body, for example `application/json`.
    public var contentType: String? {
        get { storage.fields.contentType }
        set { unique().fields.contentType = newValue }
    }
    /// Encoding of the body, for example `gzip`.
    public var contentEncoding: String? {
        get { storage.fields.contentEncoding }
        set { unique().fields.contentEncoding = newValue }
    }
    /// Application headers.
    public var headers: RabbitMQFieldTable? {
        get { storage.fields.headers }
        set { unique().fields.headers = newValue }
    }
    /// Transient or persistent.
    public var deliveryMode: DeliveryMode? {
        get { storage.fields.deliveryMode }
        set { unique().fields.deliveryMode = newValue }
    }
    /// Priority 0...9 (on queues declared with `x-max-priority`).
    public var priority: UInt8? {
        get { storage.fields.priority }
        set { unique().fields.priority = newValue }
    }
    /// Correlates a reply with its request.
    public var correlationID: String? {
        get { storage.fields.correlationID }
        set { unique().fields.correlationID = newValue }
    }
    /// Queue to send a reply to.
    public var replyTo: String? {
        get { storage.fields.replyTo }
        set { unique().fields.replyTo = newValue }
    }
    /// Per-message TTL in milliseconds, as a decimal string (for example `"60000"`).
    public var expiration: String? {
        get { storage.fields.expiration }
        set { unique().fields.expiration = newValue }
    }
    /// Application message identifier.
    public var messageID: String? {
        get { storage.fields.messageID }
        set { unique().fields.messageID = newValue }
    }
    /// Seconds since the Unix epoch.
    public var timestamp: UInt64? {
        get { storage.fields.timestamp }
        set { unique().fields.timestamp = newValue }
    }
    /// Message type name.
    public var type: String? {
        get { storage.fields.type }
        set { unique().fields.type = newValue }
    }
    /// The publishing user; RabbitMQ rejects a value other than the connection's user.
    public var userID: String? {
        get { storage.fields.userID }
        set { unique().fields.userID = newValue }
    }
    /// The publishing application.
    public var appID: String? {
        get { storage.fields.appID }
        set { unique().fields.appID = newValue }
    }
    /// Deprecated in AMQP 0-9-1; carried for completeness.
    public var clusterID: String? {
        get { storage.fields.clusterID }
        set { unique().fields.clusterID = newValue }
    }
    /// Properties with nothing set.
    public init() { storage = Storage.empty }

    /// Properties with the given values set.
    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: RabbitMQFieldTable? = nil,
        deliveryMode: DeliveryMode? = nil, priority: UInt8? = nil, correlationID: String? = nil,
        replyTo: String? = nil, expiration: String? = nil, messageID: String? = nil,
        timestamp: UInt64? = nil, type: String? = nil, userID: String? = nil, appID: String? = nil
    ) {
        let fields = Fields(
            contentType: contentType, contentEncoding: contentEncoding, headers: headers, deliveryMode: deliveryMode,
            priority: priority, correlationID: correlationID, replyTo: replyTo, expiration: expiration,
            messageID: messageID, timestamp: timestamp, type: type, userID: userID, appID: appID)
        storage = fields == Fields() ? Storage.empty : Storage(fields: fields)
    }

    /// Properties in a new box holding `fields` (decoding: one allocation, nothing copied).
    init(fields: Fields) { storage = Storage(fields: fields) }

    /// True for properties that never had a field set (they share the empty box): a cheap
    /// test, false for some empty values too.
    var isKnownEmpty: Bool { storage === Storage.empty }

    public static func == (lhs: RabbitMQProperties, rhs: RabbitMQProperties) -> Bool {
        lhs.storage === rhs.storage || lhs.storage.fields == rhs.storage.fields
    }

    public func hash(into hasher: inout Hasher) {
        storage.fields.hash(into: &hasher)
    }

    private mutating func unique() -> Storage {
        // The shared empty box may be statically initialised (immortal), and an immortal
        // object counts as uniquely referenced: test it by identity first.
        if storage === Storage.empty || !isKnownUniquelyReferenced(&storage) { storage = Storage(fields: storage.fields) }
        return storage
    }

    struct Fields: Hashable, Sendable {
        var contentType: String? = nil
        var contentEncoding: String? = nil
        var headers: RabbitMQFieldTable? = nil
        var deliveryMode: DeliveryMode? = nil
        var priority: UInt8? = nil
        var correlationID: String? = nil
        var replyTo: String? = nil
        var expiration: String? = nil
        var messageID: String? = nil
        var timestamp: UInt64? = nil
        var type: String? = nil
        var userID: String? = nil
        var appID: String? = nil
        var clusterID: String? = nil
    }

    // @unchecked Sendable: `fields` can be set only in this file, and is written only
    // through `unique()`, that is only while
    // exactly one RabbitMQProperties value refers to the box (the shared empty box is never
    // written: `unique()` recognises it by identity and copies it first); a shared box is
    // only read. Fields is Sendable. The same rule rules out overlapping accesses, so
    // the dynamic exclusivity checks are skipped.
    final class Storage: @unchecked Sendable {
        static let empty = Storage(fields: Fields())
        @exclusivity(unchecked) fileprivate(set) var fields: Fields
        init(fields: Fields) { self.fields = fields }
    }
}
