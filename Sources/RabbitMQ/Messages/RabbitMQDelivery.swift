/// A message received from a queue, by a consumer or by ``RabbitMQChannel/get(queue:autoAck:)``.
///
/// Unless it was received with auto-ack, settle it exactly once with ``ack(multiple:)``,
/// ``nack(multiple:requeue:)`` or ``reject(requeue:)``. Settling never suspends: it hands a
/// command to the connection's I/O thread. A settlement for a channel that has closed since
/// the delivery arrived throws the channel's close reason; one for a delivery received before
/// the connection was recovered is dropped. In both cases the broker has already requeued
/// the message, and it will be delivered again with `redelivered` set.
public struct RabbitMQDelivery: Sendable {
    /// The body.
    public var body: [UInt8]
    /// The properties.
    public var properties: RabbitMQProperties
    /// The exchange the message was published to (empty for the default exchange).
    public var exchange: String
    /// The routing key it was published with.
    public var routingKey: String
    /// Whether the broker delivered it before (and it was requeued).
    public var redelivered: Bool
    /// The channel-scoped tag that acknowledges it.
    public var deliveryTag: UInt64
    /// The consumer it was delivered to; empty for `basic.get`.
    public var consumerTag: String
    /// For `basic.get`: how many messages were left in the queue.
    public var messageCount: UInt32?

    let channel: ChannelShared?
    /// The connection epoch it arrived in: after a recovery, settlements of older deliveries
    /// are dropped (the broker requeued them; a stale tag would close the channel with 406).
    let epoch: UInt64

    init(
        body: [UInt8], properties: RabbitMQProperties, exchange: String, routingKey: String,
        redelivered: Bool, deliveryTag: UInt64, consumerTag: String, messageCount: UInt32?,
        channel: ChannelShared?, epoch: UInt64
    ) {
        self.body = body
        self.properties = properties
        self.exchange = exchange
        self.routingKey = routingKey
        self.redelivered = redelivered
        self.deliveryTag = deliveryTag
        self.consumerTag = consumerTag
        self.messageCount = messageCount
        self.channel = channel
        self.epoch = epoch
    }

    /// Received without auto-ack: it can (and must) be settled.
    var isSettleable: Bool { channel != nil }

    /// The body decoded as UTF-8 (invalid sequences replaced).
    public var bodyString: String { String(decoding: body, as: UTF8.self) }

    /// Acknowledges this delivery (and with `multiple`, every earlier unsettled one on the channel).
    public func ack(multiple: Bool = false) throws(RabbitMQError) {
        try settle(.ack, multiple: multiple, requeue: false)
    }

    /// Negatively acknowledges this delivery (and with `multiple`, every earlier one);
    /// `requeue: false` dead-letters or drops it.
    public func nack(multiple: Bool = false, requeue: Bool = true) throws(RabbitMQError) {
        try settle(.nack, multiple: multiple, requeue: requeue)
    }

    /// Rejects this delivery; `requeue: false` dead-letters or drops it.
    public func reject(requeue: Bool = true) throws(RabbitMQError) {
        try settle(.reject, multiple: false, requeue: requeue)
    }

    private func settle(_ kind: Settlement.Kind, multiple: Bool, requeue: Bool) throws(RabbitMQError) {
        guard let channel else {
            throw RabbitMQError(code: .unexpectedReply, message: "this delivery was received with auto-ack")
        }
        try channel.settle(
            Settlement(kind: kind, deliveryTag: deliveryTag, multiple: multiple, requeue: requeue, epoch: epoch))
    }
}

/// An ack, nack or reject on its way to the I/O thread.
struct Settlement: Sendable {
    enum Kind: Sendable { case ack, nack, reject }
    var kind: Kind
    var deliveryTag: UInt64
    var multiple: Bool
    var requeue: Bool
    var epoch: UInt64
}
