/// A request from any task to a connection's I/O thread. Only Sendable values cross.
enum Command: Sendable {
    case openChannel(ChannelShared, CheckedContinuation<Void, any Error>)
    case request(ChannelShared, ChannelRequest, CheckedContinuation<ChannelReply, any Error>)
    case publish(ChannelShared, OutboundMessage, ConfirmTicket?)
    case settle(ChannelShared, Settlement)
    case consume(ChannelShared, ConsumeRequest, ConsumerSink, CheckedContinuation<ChannelReply, any Error>)
    case cancelConsumer(ChannelShared, consumerTag: String, CheckedContinuation<ChannelReply, any Error>?)
    case closeChannel(ChannelShared, CheckedContinuation<Void, any Error>)
    case close(CheckedContinuation<Void, any Error>?)
}

/// A synchronous AMQP method sent on a channel; the broker answers each with one reply.
enum ChannelRequest: Sendable {
    case exchangeDeclare(name: String, type: String, passive: Bool, durable: Bool, autoDelete: Bool, internal: Bool, arguments: RabbitMQFieldTable)
    case exchangeDelete(name: String, ifUnused: Bool)
    case exchangeBind(destination: String, source: String, routingKey: String, arguments: RabbitMQFieldTable)
    case exchangeUnbind(destination: String, source: String, routingKey: String, arguments: RabbitMQFieldTable)
    case queueDeclare(name: String, passive: Bool, durable: Bool, exclusive: Bool, autoDelete: Bool, arguments: RabbitMQFieldTable)
    case queueBind(queue: String, exchange: String, routingKey: String, arguments: RabbitMQFieldTable)
    case queueUnbind(queue: String, exchange: String, routingKey: String, arguments: RabbitMQFieldTable)
    case queuePurge(name: String)
    case queueDelete(name: String, ifUnused: Bool, ifEmpty: Bool)
    case basicQos(prefetchCount: UInt16, global: Bool)
    case basicGet(queue: String, noAck: Bool)
    case confirmSelect
}

/// The decoded answer to a ``ChannelRequest`` (names copied out of rabbitmq-c's pools).
enum ChannelReply: Sendable {
    case ok
    case queueDeclared(RabbitMQQueueDeclareResult)
    case messageCount(UInt32)
    case consumerTag(String)
    case delivery(RabbitMQDelivery?)
}

struct ConsumeRequest: Sendable {
    var queue: String
    var consumerTag: String
    var noAck: Bool
    var exclusive: Bool
    var arguments: RabbitMQFieldTable
}

/// A message to publish; the body is retained, not copied, until rabbitmq-c writes it.
struct OutboundMessage: Sendable {
    var body: [UInt8]
    var exchange: String
    var routingKey: String
    var properties: RabbitMQProperties
    var mandatory: Bool

    /// AMQP short strings hold at most 255 bytes: refuse longer ones here, with an error for
    /// the publisher, rather than fail the encoding on the I/O thread.
    func validate() throws(RabbitMQError) {
        try Self.check(exchange, "exchange name")
        try Self.check(routingKey, "routing key")
        let p = properties
        try Self.check(p.contentType, "content type")
        try Self.check(p.contentEncoding, "content encoding")
        try Self.check(p.correlationID, "correlation id")
        try Self.check(p.replyTo, "reply-to")
        try Self.check(p.expiration, "expiration")
        try Self.check(p.messageID, "message id")
        try Self.check(p.type, "type")
        try Self.check(p.userID, "user id")
        try Self.check(p.appID, "app id")
        try Self.check(p.clusterID, "cluster id")
    }

    /// The content header frame must fit in one frame of `frameMax` bytes (at least 4096):
    /// only a large headers table can make it too big.
    func validateHeaderSize(frameMax: () -> Int) throws(RabbitMQError) {
        guard let headers = properties.headers else { return }
        // Frame header and end (8), class, weight, body size, flags (14), the other properties.
        let size = 22 + PublishWriter.sizeWithoutHeaders(properties) + headers.encodedSize
        guard size > 4096 else { return }
        let limit = frameMax()
        guard size > limit else { return }
        throw RabbitMQError(
            code: .invalidConfiguration, scope: .none,
            message: "the message's properties take \(size) bytes encoded; they must fit in one frame of \(limit) bytes (frame_max)")
    }

    @inline(__always)
    private static func check(_ value: String?, _ name: @autoclosure () -> String) throws(RabbitMQError) {
        if let value { try check(value, name()) }
    }

    @inline(__always)
    private static func check(_ value: String, _ name: String) throws(RabbitMQError) {
        guard value.utf8.count > 255 else { return }
        throw RabbitMQError(
            code: .invalidConfiguration, scope: .none,
            message: "the \(name) is \(value.utf8.count) bytes long; AMQP allows at most 255")
    }
}

/// Where the I/O thread hands a consumer's deliveries.
struct ConsumerSink: Sendable {
    var buffer: DeliveryBuffer
    var noAck: Bool
    /// Set for an inline consumer: runs on the I/O thread for each delivery, instead of the
    /// buffer; the buffer then only carries the end of the sequence.
    var handler: (@Sendable (RabbitMQDelivery) -> Void)?
}
