/// A request from any task to a connection's I/O thread. Only Sendable values cross, and
/// every payload has a size known at compile time (continuations travel in a ``Waiter``), so
/// moving a command costs no metadata lookup.
enum Command: Sendable {
    case openChannel(ChannelShared, Waiter)
    case request(ChannelShared, ChannelRequest, Waiter)
    /// `holdsSlot`: the publish took a slot of its channel's confirm window.
    case publish(ChannelShared, OutboundMessage, ConfirmTicket?, holdsSlot: Bool)
    /// A publish not worth sending after its deadline (an RPC request): if the I/O thread
    /// has to hold it (an outage), it drops it once the deadline has passed.
    case publishBefore(ChannelShared, OutboundMessage, holdsSlot: Bool, ConnectionStateMachine.PublishDeadline)
    case settle(ChannelShared, Settlement)
    case consume(ChannelShared, ConsumeRequest, ConsumerSink, Waiter)
    case cancelConsumer(ChannelShared, consumerTag: String, Waiter?)
    case closeChannel(ChannelShared, Waiter)
    case close(Waiter?)
    case updateSecret(String, reason: String, Waiter)
}

extension Command {
    /// Whether a publish took a slot of its channel's confirm window.
    var holdsSlot: Bool {
        switch self {
        case .publish(_, _, _, let holdsSlot), .publishBefore(_, _, let holdsSlot, _): holdsSlot
        default: false
        }
    }
}

/// A message to publish; the body is retained, not copied, until rabbitmq-c writes it.
struct OutboundMessage: Sendable {
    /// An empty message, where one is needed but not used.
    static let placeholder = OutboundMessage(body: [], exchange: "", routingKey: "", properties: .init(), mandatory: false)

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
    /// only a large headers table can make it too big. Headers may not nest deeper than
    /// ``RabbitMQFieldTable/maxDepth``.
    func validateHeaders(frameMax: () -> Int) throws(RabbitMQError) {
        guard let headers = properties.headers else { return }
        let (tableSize, depth, longKey) = headers.measured()
        if depth > RabbitMQFieldTable.maxDepth {
            throw RabbitMQError(
                code: .invalidConfiguration, scope: .none,
                message: "the message's headers nest tables and arrays more than \(RabbitMQFieldTable.maxDepth) deep")
        }
        if longKey { throw RabbitMQFieldTable.longKeyError("message's headers") }
        // Frame header and end (8), class, weight, body size, flags (14), the other properties,
        // and room for the return tag of a mandatory confirm-mode publish (38).
        let size = 22 + FrameWriter.sizeWithoutHeaders(properties) + tableSize + (mandatory ? 38 : 0)
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
