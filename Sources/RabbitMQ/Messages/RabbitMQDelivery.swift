/// A message received from a queue, by a consumer or by ``RabbitMQChannel/get(queue:autoAck:)``.
///
/// Unless it was received with auto-ack, settle it exactly once with ``ack(multiple:)``,
/// ``nack(multiple:requeue:)`` or ``reject(requeue:)``. Settling never suspends: it hands a
/// command to the connection's I/O thread. A settlement for a channel that has closed since
/// the delivery arrived throws the channel's close reason; one for a delivery received before
/// the connection was recovered is dropped. In both cases the broker has already requeued
/// the message, and it will be delivered again with `redelivered` set.
public struct RabbitMQDelivery: Sendable {
    /// The fields live in one copy-on-write box: a delivery is handed from the I/O thread to
    /// the consumer's buffer, its batch and the caller, and each of those copies costs one
    /// reference count instead of one per field.
    private var storage: Storage

    /// The body.
    public var body: [UInt8] {
        get { storage.body }
        _modify { yield &unique().body }
    }
    /// The properties.
    public var properties: RabbitMQProperties {
        get { storage.properties }
        _modify { yield &unique().properties }
    }
    /// The exchange the message was published to (empty for the default exchange).
    public var exchange: String {
        get { storage.exchange }
        set { unique().exchange = newValue }
    }
    /// The routing key it was published with.
    public var routingKey: String {
        get { storage.routingKey }
        set { unique().routingKey = newValue }
    }
    /// Whether the broker delivered it before (and it was requeued).
    public var redelivered: Bool {
        get { storage.redelivered }
        set { unique().redelivered = newValue }
    }
    /// The channel-scoped tag that acknowledges it.
    public var deliveryTag: UInt64 {
        get { storage.deliveryTag }
        set { unique().deliveryTag = newValue }
    }
    /// The consumer it was delivered to; empty for `basic.get`.
    public var consumerTag: String {
        get { storage.consumerTag }
        set { unique().consumerTag = newValue }
    }
    /// For `basic.get`: how many messages were left in the queue.
    public var messageCount: UInt32? {
        get { storage.messageCount }
        set { unique().messageCount = newValue }
    }

    /// How many times a quorum queue delivered this message before (its `x-delivery-count`
    /// header): nil for other queue types and on a first delivery (RabbitMQ 3.10 says 0 for
    /// a first `basic.get`). RabbitMQ 3.10 and 4.0 count every return: a nack or reject with
    /// requeue, and a consumer or channel gone with the message unacknowledged (4.3 changed
    /// what counts). A quorum
    /// queue's delivery limit is checked against it
    /// (``RabbitMQQueueType/quorum(deliveryLimit:initialGroupSize:)``).
    public var deliveryCount: Int? {
        guard let value = storage.properties.headers?["x-delivery-count"]?.int64Value, value >= 0 else { return nil }
        return Int(clamping: value)
    }

    /// The offset of a message read from a stream (its `x-stream-offset` header); nil for
    /// other queues.
    public var streamOffset: UInt64? {
        guard let value = storage.properties.headers?["x-stream-offset"]?.int64Value, value >= 0 else { return nil }
        return UInt64(value)
    }

    var channel: ChannelShared? { storage.channel }
    /// The connection epoch it arrived in: after a recovery, settlements of older deliveries
    /// are dropped (the broker requeued them; a stale tag would close the channel with 406).
    var epoch: UInt64 { storage.epoch }

    /// Makes it settleable on `channel` (not for auto-ack deliveries).
    mutating func settleOn(_ channel: ChannelShared) {
        unique().channel = channel
    }

    /// Received without auto-ack: it can (and must) be settled.
    var isSettleable: Bool { storage.channel != nil }

    init(
        body: [UInt8], properties: RabbitMQProperties, exchange: String, routingKey: String,
        redelivered: Bool, deliveryTag: UInt64, consumerTag: String, messageCount: UInt32?,
        channel: ChannelShared?, epoch: UInt64
    ) {
        storage = Storage(
            body: body, properties: properties, exchange: exchange, routingKey: routingKey, redelivered: redelivered,
            deliveryTag: deliveryTag, consumerTag: consumerTag, messageCount: messageCount, channel: channel, epoch: epoch)
    }

    private mutating func unique() -> Storage {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return storage
    }

    // @unchecked Sendable: a Storage is mutated only through `unique()`, that is only while
    // exactly one RabbitMQDelivery value refers to it; a value that is shared (and so may be
    // read from other threads) is copied before any write. Every stored field is Sendable.
    // The same rule makes overlapping accesses impossible, so the fields skip the dynamic
    // exclusivity checks (about 80 instructions per access on the consume path).
    private final class Storage: @unchecked Sendable {
        @exclusivity(unchecked) var body: [UInt8]
        @exclusivity(unchecked) var properties: RabbitMQProperties
        @exclusivity(unchecked) var exchange: String
        @exclusivity(unchecked) var routingKey: String
        @exclusivity(unchecked) var redelivered: Bool
        @exclusivity(unchecked) var deliveryTag: UInt64
        @exclusivity(unchecked) var consumerTag: String
        @exclusivity(unchecked) var messageCount: UInt32?
        @exclusivity(unchecked) var channel: ChannelShared?
        let epoch: UInt64

        init(
            body: [UInt8], properties: RabbitMQProperties, exchange: String, routingKey: String, redelivered: Bool,
            deliveryTag: UInt64, consumerTag: String, messageCount: UInt32?, channel: ChannelShared?, epoch: UInt64
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

        func copy() -> Storage {
            Storage(
                body: body, properties: properties, exchange: exchange, routingKey: routingKey, redelivered: redelivered,
                deliveryTag: deliveryTag, consumerTag: consumerTag, messageCount: messageCount, channel: channel, epoch: epoch)
        }
    }

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
