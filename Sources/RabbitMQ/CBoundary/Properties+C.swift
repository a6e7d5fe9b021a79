import CRabbitMQ

private let flagContentType = amqp_flags_t(AMQP_BASIC_CONTENT_TYPE_FLAG)
private let flagContentEncoding = amqp_flags_t(AMQP_BASIC_CONTENT_ENCODING_FLAG)
private let flagHeaders = amqp_flags_t(AMQP_BASIC_HEADERS_FLAG)
private let flagDeliveryMode = amqp_flags_t(AMQP_BASIC_DELIVERY_MODE_FLAG)
private let flagPriority = amqp_flags_t(AMQP_BASIC_PRIORITY_FLAG)
private let flagCorrelationID = amqp_flags_t(AMQP_BASIC_CORRELATION_ID_FLAG)
private let flagReplyTo = amqp_flags_t(AMQP_BASIC_REPLY_TO_FLAG)
private let flagExpiration = amqp_flags_t(AMQP_BASIC_EXPIRATION_FLAG)
private let flagMessageID = amqp_flags_t(AMQP_BASIC_MESSAGE_ID_FLAG)
private let flagTimestamp = amqp_flags_t(AMQP_BASIC_TIMESTAMP_FLAG)
private let flagType = amqp_flags_t(AMQP_BASIC_TYPE_FLAG)
private let flagUserID = amqp_flags_t(AMQP_BASIC_USER_ID_FLAG)
private let flagAppID = amqp_flags_t(AMQP_BASIC_APP_ID_FLAG)
private let flagClusterID = amqp_flags_t(AMQP_BASIC_CLUSTER_ID_FLAG)

extension ScratchPool {
    /// Builds C basic properties in this pool; valid until the next ``recycle()``. A
    /// `returnTag` is added to the headers (see ``Unconfirmed/returnTagHeader``).
    func properties(_ p: RabbitMQProperties, returnTag: UInt64? = nil) -> amqp_basic_properties_t {
        var c = amqp_basic_properties_t()
        var flags: amqp_flags_t = 0
        if let v = p.contentType { c.content_type = bytes(v); flags |= flagContentType }
        if let v = p.contentEncoding { c.content_encoding = bytes(v); flags |= flagContentEncoding }
        if p.headers != nil || returnTag != nil {
            c.headers = table(p.headers ?? [:], returnTag: returnTag)
            flags |= flagHeaders
        }
        if let v = p.deliveryMode { c.delivery_mode = v.rawValue; flags |= flagDeliveryMode }
        if let v = p.priority { c.priority = v; flags |= flagPriority }
        if let v = p.correlationID { c.correlation_id = bytes(v); flags |= flagCorrelationID }
        if let v = p.replyTo { c.reply_to = bytes(v); flags |= flagReplyTo }
        if let v = p.expiration { c.expiration = bytes(v); flags |= flagExpiration }
        if let v = p.messageID { c.message_id = bytes(v); flags |= flagMessageID }
        if let v = p.timestamp { c.timestamp = v; flags |= flagTimestamp }
        if let v = p.type { c.type = bytes(v); flags |= flagType }
        if let v = p.userID { c.user_id = bytes(v); flags |= flagUserID }
        if let v = p.appID { c.app_id = bytes(v); flags |= flagAppID }
        if let v = p.clusterID { c.cluster_id = bytes(v); flags |= flagClusterID }
        c._flags = flags
        return c
    }
}

extension RabbitMQProperties {
    /// Copies decoded C properties (pool memory) into a Swift value.
    init(cProperties c: amqp_basic_properties_t) throws(FieldTableTooDeep) {
        self = c._flags == 0 ? RabbitMQProperties() : RabbitMQProperties(fields: try Fields(cProperties: c))
    }

    /// The properties decoded from `c`, or `cached` when `c` carries exactly the same values
    /// (compared field by field, never hashed). A publisher usually sends the same
    /// properties again and again; sharing one immutable box then saves decoding the strings,
    /// an allocation and a deallocation per message. Properties with headers are decoded
    /// every time (comparing a table costs about as much as decoding it).
    static func reusing(
        _ cached: inout RabbitMQProperties, flags cachedFlags: inout amqp_flags_t, for c: amqp_basic_properties_t
    ) throws(FieldTableTooDeep) -> RabbitMQProperties {
        let flags = c._flags
        if flags == 0 { return RabbitMQProperties() }
        if flags == cachedFlags, cached.storage.matches(c) { return cached }
        let decoded = RabbitMQProperties(fields: try Fields(cProperties: c))
        if flags & flagHeaders == 0 {
            cached = decoded
            cachedFlags = flags
        }
        return decoded
    }
}

extension RabbitMQProperties {
    /// The properties of a content header frame decoded by rabbitmq-c (`decoded` points into
    /// its pool), through the channel's decode cache (see ``reusing(_:flags:for:)``); nil
    /// when the frame carries none. A header of another class than basic is refused.
    static func contentHeader(
        classID: UInt16, decoded: UnsafeMutableRawPointer?, cached: inout RabbitMQProperties, flags: inout amqp_flags_t
    ) throws(ContentHeaderError) -> RabbitMQProperties? {
        var problem: ContentHeaderError?
        let properties = contentHeader(classID: classID, decoded: decoded, cached: &cached, flags: &flags, problem: &problem)
        if let problem { throw problem }
        return properties
    }

    /// ``contentHeader(classID:decoded:cached:flags:)`` for the I/O loop: the problem, if
    /// any, in `problem` (nil properties then), with no error thrown on the delivery path.
    @inline(__always)
    static func contentHeader(
        classID: UInt16, decoded: UnsafeMutableRawPointer?, cached: inout RabbitMQProperties, flags: inout amqp_flags_t,
        problem: inout ContentHeaderError?
    ) -> RabbitMQProperties? {
        // rabbitmq-c decodes a header of any class into that class's structure; only basic's
        // holds properties (the others are 8 bytes: reading them as basic reads past them).
        guard classID == UInt16(AMQP_BASIC_CLASS) else {
            problem = .notBasic(classID: classID)
            return nil
        }
        guard let decoded else { return nil }
        let properties = decoded.assumingMemoryBound(to: amqp_basic_properties_t.self)
        guard properties.pointee._flags != 0 else { return nil }
        do {
            return try reusing(&cached, flags: &flags, for: properties.pointee)
        } catch {
            problem = .tooDeep
            return nil
        }
    }
}

/// Why the properties of a content header could not be read.
enum ContentHeaderError: Error, Equatable {
    /// Its headers nest tables deeper than ``RabbitMQFieldTable/maxDepth``: the message is
    /// undecodable, the connection fine.
    case tooDeep
    /// The header is of another class than basic: a protocol error.
    case notBasic(classID: UInt16)
}

extension RabbitMQProperties.Storage {
    /// Whether the fields hold exactly the values of `c`, given fields decoded from C
    /// properties with the same flags (so the same fields are present; headers never are).
    /// A method of the box, so each field is read where it is, not the struct copied first.
    func matches(_ c: amqp_basic_properties_t) -> Bool {
        let flags = c._flags
        if flags & flagDeliveryMode != 0, fields.deliveryMode?.rawValue != c.delivery_mode { return false }
        if flags & flagPriority != 0, fields.priority != c.priority { return false }
        if flags & flagTimestamp != 0, fields.timestamp != c.timestamp { return false }
        if flags & flagContentType != 0, !Self.same(fields.contentType, c.content_type) { return false }
        if flags & flagContentEncoding != 0, !Self.same(fields.contentEncoding, c.content_encoding) { return false }
        if flags & flagCorrelationID != 0, !Self.same(fields.correlationID, c.correlation_id) { return false }
        if flags & flagReplyTo != 0, !Self.same(fields.replyTo, c.reply_to) { return false }
        if flags & flagExpiration != 0, !Self.same(fields.expiration, c.expiration) { return false }
        if flags & flagMessageID != 0, !Self.same(fields.messageID, c.message_id) { return false }
        if flags & flagType != 0, !Self.same(fields.type, c.type) { return false }
        if flags & flagUserID != 0, !Self.same(fields.userID, c.user_id) { return false }
        if flags & flagAppID != 0, !Self.same(fields.appID, c.app_id) { return false }
        if flags & flagClusterID != 0, !Self.same(fields.clusterID, c.cluster_id) { return false }
        return true
    }

    @inline(__always)
    private static func same(_ string: String?, _ bytes: amqp_bytes_t) -> Bool {
        string?.hasAMQPBytes(bytes) ?? false
    }
}

extension RabbitMQProperties.Fields {
    init(cProperties c: amqp_basic_properties_t) throws(FieldTableTooDeep) {
        self.init()
        let flags = c._flags
        if flags & flagContentType != 0 { contentType = String(amqpBytes: c.content_type) }
        if flags & flagContentEncoding != 0 { contentEncoding = String(amqpBytes: c.content_encoding) }
        if flags & flagHeaders != 0 { headers = try RabbitMQFieldTable(cTable: c.headers) }
        if flags & flagDeliveryMode != 0 { deliveryMode = RabbitMQProperties.DeliveryMode(rawValue: c.delivery_mode) }
        if flags & flagPriority != 0 { priority = c.priority }
        if flags & flagCorrelationID != 0 { correlationID = String(amqpBytes: c.correlation_id) }
        if flags & flagReplyTo != 0 { replyTo = String(amqpBytes: c.reply_to) }
        if flags & flagExpiration != 0 { expiration = String(amqpBytes: c.expiration) }
        if flags & flagMessageID != 0 { messageID = String(amqpBytes: c.message_id) }
        if flags & flagTimestamp != 0 { timestamp = c.timestamp }
        if flags & flagType != 0 { type = String(amqpBytes: c.type) }
        if flags & flagUserID != 0 { userID = String(amqpBytes: c.user_id) }
        if flags & flagAppID != 0 { appID = String(amqpBytes: c.app_id) }
        if flags & flagClusterID != 0 { clusterID = String(amqpBytes: c.cluster_id) }
    }
}
