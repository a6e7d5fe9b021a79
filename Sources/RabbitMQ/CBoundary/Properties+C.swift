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
    /// Builds C basic properties in this pool; valid until the next ``recycle()``.
    func properties(_ p: RabbitMQProperties) -> amqp_basic_properties_t {
        var c = amqp_basic_properties_t()
        var flags: amqp_flags_t = 0
        if let v = p.contentType { c.content_type = bytes(v); flags |= flagContentType }
        if let v = p.contentEncoding { c.content_encoding = bytes(v); flags |= flagContentEncoding }
        if let v = p.headers { c.headers = table(v); flags |= flagHeaders }
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
    init(cProperties c: amqp_basic_properties_t) {
        self.init()
        setFields(from: c)
    }

    /// Sets the fields present in decoded C properties, in place (the others stay as they are).
    mutating func setFields(from c: amqp_basic_properties_t) {
        let flags = c._flags
        guard flags != 0 else { return }
        if flags & flagContentType != 0 { contentType = String(amqpBytes: c.content_type) }
        if flags & flagContentEncoding != 0 { contentEncoding = String(amqpBytes: c.content_encoding) }
        if flags & flagHeaders != 0 { headers = RabbitMQFieldTable(cTable: c.headers) }
        if flags & flagDeliveryMode != 0 { deliveryMode = DeliveryMode(rawValue: c.delivery_mode) }
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
