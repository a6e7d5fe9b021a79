/// A synchronous AMQP method sent on a channel; the broker answers each with one reply.
enum ChannelRequest: Sendable, Equatable {
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
    case secretUpdate(RabbitMQSecretUpdate)
}

struct ConsumeRequest: Sendable, Equatable {
    var queue: String
    var consumerTag: String
    var noAck: Bool
    var exclusive: Bool
    var arguments: RabbitMQFieldTable
}

extension ChannelRequest {
    /// Refuses, where the request is made, what AMQP cannot carry: a short string (a name,
    /// a routing key) over 255 bytes, arguments nested deeper than
    /// ``RabbitMQFieldTable/maxDepth`` (they are encoded by recursion on the I/O thread), or a
    /// method that does not fit in one frame of `frameMax` bytes. The I/O thread could only
    /// fail to encode it, which costs the connection.
    func check(frameMax: Int) throws(RabbitMQError) {
        var strings: [(String, String)] = []
        var arguments: RabbitMQFieldTable?
        switch self {
        case .exchangeDeclare(let name, let type, _, _, _, _, let table):
            strings = [(name, "exchange name"), (type, "exchange type")]
            arguments = table
        case .exchangeDelete(let name, _):
            strings = [(name, "exchange name")]
        case .exchangeBind(let destination, let source, let routingKey, let table),
            .exchangeUnbind(let destination, let source, let routingKey, let table):
            strings = [(destination, "destination exchange name"), (source, "source exchange name"), (routingKey, "routing key")]
            arguments = table
        case .queueDeclare(let name, _, _, _, _, let table):
            strings = [(name, "queue name")]
            arguments = table
        case .queueBind(let queue, let exchange, let routingKey, let table),
            .queueUnbind(let queue, let exchange, let routingKey, let table):
            strings = [(queue, "queue name"), (exchange, "exchange name"), (routingKey, "routing key")]
            arguments = table
        case .queuePurge(let name), .queueDelete(let name, _, _), .basicGet(let name, _):
            strings = [(name, "queue name")]
        case .basicQos, .confirmSelect:
            return
        }
        try Self.checkEncodable(strings, arguments: arguments, frameMax: frameMax)
    }

    /// See ``check(frameMax:)``.
    static func checkEncodable(_ strings: [(String, String)], arguments: RabbitMQFieldTable?, frameMax: Int) throws(RabbitMQError) {
        // Class and method ids (4), the ticket and flags (at most 3), each short string with
        // its length byte.
        var size = 7
        for (value, what) in strings {
            let length = value.utf8.count
            guard length <= 255 else {
                throw RabbitMQError(
                    code: .invalidConfiguration, scope: .none, message: "the \(what) is \(length) bytes long; AMQP allows at most 255")
            }
            size += 1 + length
        }
        if let arguments {
            let (tableSize, depth, longKey) = arguments.measured()
            guard depth <= RabbitMQFieldTable.maxDepth else {
                throw RabbitMQError(
                    code: .invalidConfiguration, scope: .none,
                    message: "the arguments nest tables and arrays more than \(RabbitMQFieldTable.maxDepth) deep")
            }
            guard !longKey else { throw RabbitMQFieldTable.longKeyError("arguments") }
            size += tableSize
        }
        // The frame's header (7) and end (1) take the rest of frame_max.
        let limit = frameMax - 8
        guard size > limit else { return }
        throw RabbitMQError(
            code: .invalidConfiguration, scope: .none,
            message: "the request takes \(size) bytes encoded; it must fit in one frame of \(frameMax) bytes (frame_max)")
    }
    /// The reply (or one of two replies) the broker answers this request with.
    var expectedReplies: (AMQPMethodID, AMQPMethodID) {
        switch self {
        case .exchangeDeclare: (.exchangeDeclareOk, .exchangeDeclareOk)
        case .exchangeDelete: (.exchangeDeleteOk, .exchangeDeleteOk)
        case .exchangeBind: (.exchangeBindOk, .exchangeBindOk)
        case .exchangeUnbind: (.exchangeUnbindOk, .exchangeUnbindOk)
        case .queueDeclare: (.queueDeclareOk, .queueDeclareOk)
        case .queueBind: (.queueBindOk, .queueBindOk)
        case .queueUnbind: (.queueUnbindOk, .queueUnbindOk)
        case .queuePurge: (.queuePurgeOk, .queuePurgeOk)
        case .queueDelete: (.queueDeleteOk, .queueDeleteOk)
        case .basicQos: (.basicQosOk, .basicQosOk)
        case .basicGet: (.basicGetOk, .basicGetEmpty)
        case .confirmSelect: (.confirmSelectOk, .confirmSelectOk)
        }
    }

    /// A short name for logs and errors (no arguments, no names).
    var methodName: String {
        switch self {
        case .exchangeDeclare: "exchange.declare"
        case .exchangeDelete: "exchange.delete"
        case .exchangeBind: "exchange.bind"
        case .exchangeUnbind: "exchange.unbind"
        case .queueDeclare: "queue.declare"
        case .queueBind: "queue.bind"
        case .queueUnbind: "queue.unbind"
        case .queuePurge: "queue.purge"
        case .queueDelete: "queue.delete"
        case .basicQos: "basic.qos"
        case .basicGet: "basic.get"
        case .confirmSelect: "confirm.select"
        }
    }
}

extension ChannelReply: Equatable {
    /// For tests: deliveries compare by tag, body and routing.
    static func == (lhs: ChannelReply, rhs: ChannelReply) -> Bool {
        switch (lhs, rhs) {
        case (.ok, .ok): true
        case (.queueDeclared(let a), .queueDeclared(let b)): a == b
        case (.messageCount(let a), .messageCount(let b)): a == b
        case (.consumerTag(let a), .consumerTag(let b)): a == b
        case (.delivery(let a), .delivery(let b)):
            a?.deliveryTag == b?.deliveryTag && a?.body == b?.body && a?.routingKey == b?.routingKey
        default: false
        }
    }
}

extension ConsumeRequest {
    /// See ``ChannelRequest/check(frameMax:)``.
    func check(frameMax: Int) throws(RabbitMQError) {
        try ChannelRequest.checkEncodable([(queue, "queue name"), (consumerTag, "consumer tag")], arguments: arguments, frameMax: frameMax)
    }
}
