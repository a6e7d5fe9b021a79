/// The AMQP 0-9-1 methods this client sends or handles: class id in the high 16 bits, method
/// id in the low 16 (the numbering rabbitmq-c uses). The C boundary maps to and from these;
/// nothing above it sees a rabbitmq-c method number.
enum AMQPMethodID: UInt32, Sendable {
    case connectionClose = 0x000A_0032
    case connectionCloseOk = 0x000A_0033
    case connectionBlocked = 0x000A_003C
    case connectionUnblocked = 0x000A_003D
    /// Not in rabbitmq-c 0.11's tables (0.12 added them): encoded by the frame writer itself.
    case connectionUpdateSecret = 0x000A_0046
    case connectionUpdateSecretOk = 0x000A_0047
    case channelOpen = 0x0014_000A
    case channelOpenOk = 0x0014_000B
    case channelClose = 0x0014_0028
    case channelCloseOk = 0x0014_0029
    case exchangeDeclare = 0x0028_000A
    case exchangeDeclareOk = 0x0028_000B
    case exchangeDelete = 0x0028_0014
    case exchangeDeleteOk = 0x0028_0015
    case exchangeBind = 0x0028_001E
    case exchangeBindOk = 0x0028_001F
    case exchangeUnbind = 0x0028_0028
    case exchangeUnbindOk = 0x0028_0033
    case queueDeclare = 0x0032_000A
    case queueDeclareOk = 0x0032_000B
    case queueBind = 0x0032_0014
    case queueBindOk = 0x0032_0015
    case queuePurge = 0x0032_001E
    case queuePurgeOk = 0x0032_001F
    case queueDelete = 0x0032_0028
    case queueDeleteOk = 0x0032_0029
    case queueUnbind = 0x0032_0032
    case queueUnbindOk = 0x0032_0033
    case basicQos = 0x003C_000A
    case basicQosOk = 0x003C_000B
    case basicConsume = 0x003C_0014
    case basicConsumeOk = 0x003C_0015
    case basicCancel = 0x003C_001E
    case basicCancelOk = 0x003C_001F
    case basicPublish = 0x003C_0028
    case basicReturn = 0x003C_0032
    case basicDeliver = 0x003C_003C
    case basicGet = 0x003C_0046
    case basicGetOk = 0x003C_0047
    case basicGetEmpty = 0x003C_0048
    case basicAck = 0x003C_0050
    case basicReject = 0x003C_005A
    case basicNack = 0x003C_0078
    case confirmSelect = 0x0055_000A
    case confirmSelectOk = 0x0055_000B

    var classID: UInt16 { UInt16(rawValue >> 16) }
    var methodID: UInt16 { UInt16(rawValue & 0xFFFF) }
}

/// A `channel.close` or `connection.close` the broker sent.
struct ServerClose: Sendable, Hashable {
    var replyCode: UInt16
    var replyText: String
    var classID: UInt16
    var methodID: UInt16

    func error(scope: RabbitMQError.Scope) -> RabbitMQError {
        .serverClose(scope: scope, replyCode: replyCode, replyText: replyText, classID: classID, methodID: methodID)
    }
}

/// A method frame from the broker, decoded into Swift values. The content-bearing ones
/// (`basic.deliver`, `basic.return`, `basic.get-ok`) travel as content events instead.
enum InboundMethod: Sendable, Equatable {
    case connectionClose(ServerClose)
    case connectionCloseOk
    case connectionBlocked(reason: String)
    case connectionUnblocked
    case connectionUpdateSecretOk
    case channelOpenOk
    case channelClose(ServerClose)
    case channelCloseOk
    case exchangeDeclareOk
    case exchangeDeleteOk
    case exchangeBindOk
    case exchangeUnbindOk
    case queueDeclareOk(RabbitMQQueueDeclareResult)
    case queueBindOk
    case queueUnbindOk
    case queuePurgeOk(messageCount: UInt32)
    case queueDeleteOk(messageCount: UInt32)
    case basicQosOk
    case basicConsumeOk(consumerTag: String)
    case basicCancelOk(consumerTag: String)
    /// The broker cancelled a consumer (`consumer_cancel_notify`); no answer is due.
    case basicCancel(consumerTag: String)
    case basicGetEmpty
    case basicAck(deliveryTag: UInt64, multiple: Bool)
    case basicNack(deliveryTag: UInt64, multiple: Bool)
    case confirmSelectOk
    /// A method this client never expects (its class and method ids).
    case unexpected(UInt32)

    var id: AMQPMethodID? {
        switch self {
        case .connectionClose: .connectionClose
        case .connectionCloseOk: .connectionCloseOk
        case .connectionBlocked: .connectionBlocked
        case .connectionUnblocked: .connectionUnblocked
        case .connectionUpdateSecretOk: .connectionUpdateSecretOk
        case .channelOpenOk: .channelOpenOk
        case .channelClose: .channelClose
        case .channelCloseOk: .channelCloseOk
        case .exchangeDeclareOk: .exchangeDeclareOk
        case .exchangeDeleteOk: .exchangeDeleteOk
        case .exchangeBindOk: .exchangeBindOk
        case .exchangeUnbindOk: .exchangeUnbindOk
        case .queueDeclareOk: .queueDeclareOk
        case .queueBindOk: .queueBindOk
        case .queueUnbindOk: .queueUnbindOk
        case .queuePurgeOk: .queuePurgeOk
        case .queueDeleteOk: .queueDeleteOk
        case .basicQosOk: .basicQosOk
        case .basicConsumeOk: .basicConsumeOk
        case .basicCancelOk: .basicCancelOk
        case .basicCancel: .basicCancel
        case .basicGetEmpty: .basicGetEmpty
        case .basicAck: .basicAck
        case .basicNack: .basicNack
        case .confirmSelectOk: .confirmSelectOk
        case .unexpected: nil
        }
    }

    /// The value handed to the caller that asked for this reply.
    var reply: ChannelReply {
        switch self {
        case .queueDeclareOk(let result): .queueDeclared(result)
        case .queuePurgeOk(let count), .queueDeleteOk(let count): .messageCount(count)
        case .basicConsumeOk(let tag): .consumerTag(tag)
        case .basicGetEmpty: .delivery(nil)
        default: .ok
        }
    }
}

/// A method this client sends (everything but `basic.publish`, which has a path of its own).
/// The C boundary holds the one encoder of each.
enum OutboundMethod: Sendable, Equatable {
    case channelOpen
    case channelClose(replyCode: UInt16, replyText: String)
    case channelCloseOk
    case connectionClose(replyCode: UInt16, replyText: String)
    case connectionCloseOk
    /// OAuth2 token refresh: the new secret for the open connection. Never logged.
    case connectionUpdateSecret(secret: String, reason: String)
    case request(ChannelRequest)
    case basicConsume(ConsumeRequest)
    case basicCancel(consumerTag: String)
    case basicAck(deliveryTag: UInt64, multiple: Bool)
    case basicNack(deliveryTag: UInt64, multiple: Bool, requeue: Bool)
    case basicReject(deliveryTag: UInt64, requeue: Bool)

    /// The wire form of an acknowledgement.
    init(_ settlement: Settlement) {
        switch settlement.kind {
        case .ack: self = .basicAck(deliveryTag: settlement.deliveryTag, multiple: settlement.multiple)
        case .nack:
            self = .basicNack(deliveryTag: settlement.deliveryTag, multiple: settlement.multiple, requeue: settlement.requeue)
        case .reject: self = .basicReject(deliveryTag: settlement.deliveryTag, requeue: settlement.requeue)
        }
    }
}
