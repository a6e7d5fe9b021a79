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
}

struct ConsumeRequest: Sendable, Equatable {
    var queue: String
    var consumerTag: String
    var noAck: Bool
    var exclusive: Bool
    var arguments: RabbitMQFieldTable
}

extension ChannelRequest {
    /// Refuses arguments nested deeper than ``RabbitMQFieldTable/maxDepth`` (they are encoded
    /// by recursion on the I/O thread).
    func checkTables() throws(RabbitMQError) {
        switch self {
        case .exchangeDeclare(_, _, _, _, _, _, let arguments), .exchangeBind(_, _, _, let arguments),
            .exchangeUnbind(_, _, _, let arguments), .queueDeclare(_, _, _, _, _, let arguments),
            .queueBind(_, _, _, let arguments), .queueUnbind(_, _, _, let arguments):
            try arguments.checkDepth("arguments")
        default:
            break
        }
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
