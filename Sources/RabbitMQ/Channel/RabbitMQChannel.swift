/// An AMQP channel: declarations, publishing and consuming, multiplexed on its connection.
///
/// A channel is `Sendable` and may be used from many tasks at once; its requests reach the
/// broker in the order they were made. When the broker closes the channel (for example 404
/// on a missing queue, or 406 on a re-declaration with other arguments) the call that caused
/// it throws the broker's error with scope `.channel`, later calls throw the same error, and
/// the connection and its other channels keep working: open a new channel to go on.
///
/// ```swift
/// let channel = try await connection.openChannel()
/// let queue = try await channel.queueDeclare("orders", durable: true)
/// try await channel.publish(Array("hello".utf8), routingKey: queue.name)
/// ```
public final class RabbitMQChannel: Sendable {
    /// The connection this channel belongs to (kept alive by the channel).
    public let connection: RabbitMQConnection
    let shared: ChannelShared

    init(connection: RabbitMQConnection, shared: ChannelShared) {
        self.connection = connection
        self.shared = shared
    }

    /// The AMQP channel number.
    public var number: UInt16 { shared.number }

    /// Whether the channel is open (neither closed by the application nor by the broker).
    public var isOpen: Bool { shared.closeReason == nil }

    /// Why the channel closed, when it did.
    public var closeReason: RabbitMQError? { shared.closeReason }

    /// Closes the channel; unacknowledged deliveries are requeued by the broker.
    public func close() async throws {
        if shared.closeReason != nil { return }
        let shared = self.shared
        try await shared.core.callVoid { .closeChannel(shared, $0) }
    }

    func request(_ request: ChannelRequest) async throws -> ChannelReply {
        try shared.checkOpen()
        try request.check(frameMax: shared.frameMax)
        let shared = self.shared
        return try await shared.core.call { .request(shared, request, $0) }
    }

    // MARK: Exchanges

    /// Declares an exchange (creates it, or checks that an identical one exists).
    ///
    /// - Parameters:
    ///   - name: The exchange's name.
    ///   - type: How it routes: ``RabbitMQExchangeType/direct``, ``RabbitMQExchangeType/topic``,
    ///     ``RabbitMQExchangeType/fanout``, ``RabbitMQExchangeType/headers``, or a plugin's type.
    ///   - passive: Only check that it exists (404 closes the channel when it does not).
    ///   - durable: Survive a broker restart.
    ///   - autoDelete: Delete it when its last binding is removed.
    ///   - internal: Only other exchanges may publish to it.
    ///   - arguments: Optional arguments, for example `alternate-exchange`.
    /// - Throws: ``RabbitMQError`` (406 when it exists with other settings).
    public func exchangeDeclare(
        _ name: String, type: RabbitMQExchangeType = .direct, passive: Bool = false, durable: Bool = false,
        autoDelete: Bool = false, internal: Bool = false, arguments: RabbitMQFieldTable = [:]
    ) async throws {
        _ = try await request(
            .exchangeDeclare(
                name: name, type: type.name, passive: passive, durable: durable, autoDelete: autoDelete,
                internal: `internal`, arguments: arguments))
    }

    /// Deletes an exchange; with `ifUnused` only when it has no bindings.
    public func exchangeDelete(_ name: String, ifUnused: Bool = false) async throws {
        _ = try await request(.exchangeDelete(name: name, ifUnused: ifUnused))
    }

    /// Binds exchange `destination` to exchange `source` (RabbitMQ's exchange-to-exchange binding).
    public func exchangeBind(
        destination: String, source: String, routingKey: String = "", arguments: RabbitMQFieldTable = [:]
    ) async throws {
        _ = try await request(
            .exchangeBind(destination: destination, source: source, routingKey: routingKey, arguments: arguments))
    }

    /// Removes an exchange-to-exchange binding.
    public func exchangeUnbind(
        destination: String, source: String, routingKey: String = "", arguments: RabbitMQFieldTable = [:]
    ) async throws {
        _ = try await request(
            .exchangeUnbind(destination: destination, source: source, routingKey: routingKey, arguments: arguments))
    }

    // MARK: Queues

    /// Declares a queue and returns its name and counts.
    ///
    /// - Parameters:
    ///   - name: The queue name; empty asks the broker to choose one (returned in the result).
    ///   - passive: Only check that it exists (404 closes the channel when it does not).
    ///   - durable: Survive a broker restart.
    ///   - exclusive: Used only by this connection and deleted when it closes. Default: true
    ///     for a server-named queue (an empty `name`), false otherwise, as the Java and .NET
    ///     clients do: RabbitMQ 4.3 refuses a queue that is neither durable nor exclusive by
    ///     default (``RabbitMQError/Code-swift.struct/deprecatedFeature``), so a named queue
    ///     there must be declared durable or exclusive.
    ///   - autoDelete: Deleted when its last consumer is cancelled.
    ///   - arguments: For example `x-message-ttl`, `x-max-length`, `x-overflow`,
    ///     `x-dead-letter-exchange`, `x-dead-letter-routing-key`, `x-queue-type: quorum`.
    /// - Throws: ``RabbitMQError`` (406 when it exists with other arguments, 405 when another
    ///   connection holds it exclusively).
    @discardableResult
    public func queueDeclare(
        _ name: String = "", passive: Bool = false, durable: Bool = false, exclusive: Bool? = nil,
        autoDelete: Bool = false, arguments: RabbitMQFieldTable = [:]
    ) async throws -> RabbitMQQueueDeclareResult {
        let reply = try await request(
            .queueDeclare(
                name: name, passive: passive, durable: durable, exclusive: exclusive ?? name.isEmpty, autoDelete: autoDelete,
                arguments: arguments))
        guard case .queueDeclared(let result) = reply else { throw unexpected(reply) }
        return result
    }

    /// Declares a queue of a given type (classic, quorum or stream) and returns its name and
    /// counts. The type's arguments (`x-queue-type`, `x-delivery-limit`, `x-max-length-bytes`,
    /// ...) are added to `arguments`.
    ///
    /// ```swift
    /// try await channel.queueDeclare("orders", type: .quorum(deliveryLimit: 5))
    /// ```
    ///
    /// - Parameters:
    ///   - name: The queue name; empty asks the broker to choose one (returned in the result).
    ///   - type: ``RabbitMQQueueType/classic``, ``RabbitMQQueueType/quorum(deliveryLimit:initialGroupSize:)``
    ///     or ``RabbitMQQueueType/stream(maxLengthBytes:maxSegmentSizeBytes:maxAge:)``.
    ///   - durable: Survive a broker restart. Default: true (quorum queues and streams are
    ///     always durable).
    ///   - exclusive: Used only by this connection and deleted when it closes (classic only).
    ///     Default: false.
    ///   - autoDelete: Deleted when its last consumer is cancelled (classic only). Default: false.
    ///   - arguments: Further arguments, for example `x-dead-letter-exchange`.
    /// - Throws: ``RabbitMQError``: ``RabbitMQError/Code-swift.struct/invalidConfiguration``,
    ///   before anything is sent, for a quorum queue or stream that is not durable, exclusive
    ///   or auto-delete, a limit out of range, or `arguments` that contradict the type; 406
    ///   when the queue exists with another type or other arguments.
    @discardableResult
    public func queueDeclare(
        _ name: String, type: RabbitMQQueueType, durable: Bool = true, exclusive: Bool = false,
        autoDelete: Bool = false, arguments: RabbitMQFieldTable = [:]
    ) async throws -> RabbitMQQueueDeclareResult {
        let arguments = try type.declarationArguments(
            durable: durable, exclusive: exclusive, autoDelete: autoDelete, arguments: arguments,
            brokerVersion: connection.serverProperties["version"]?.stringValue)
        return try await queueDeclare(
            name, durable: durable, exclusive: exclusive, autoDelete: autoDelete, arguments: arguments)
    }

    /// Binds a queue to an exchange with a routing key (or pattern, for topic exchanges).
    public func queueBind(
        queue: String, exchange: String, routingKey: String = "", arguments: RabbitMQFieldTable = [:]
    ) async throws {
        _ = try await request(.queueBind(queue: queue, exchange: exchange, routingKey: routingKey, arguments: arguments))
    }

    /// Removes a queue binding.
    public func queueUnbind(
        queue: String, exchange: String, routingKey: String = "", arguments: RabbitMQFieldTable = [:]
    ) async throws {
        _ = try await request(
            .queueUnbind(queue: queue, exchange: exchange, routingKey: routingKey, arguments: arguments))
    }

    /// Removes every ready message from a queue and returns how many were removed.
    @discardableResult
    public func queuePurge(_ name: String) async throws -> UInt32 {
        let reply = try await request(.queuePurge(name: name))
        guard case .messageCount(let count) = reply else { throw unexpected(reply) }
        return count
    }

    /// Deletes a queue and returns how many messages it held. Its consumers are cancelled
    /// by the broker (their sequences end with `consumerCancelled`).
    @discardableResult
    public func queueDelete(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws -> UInt32 {
        let reply = try await request(.queueDelete(name: name, ifUnused: ifUnused, ifEmpty: ifEmpty))
        guard case .messageCount(let count) = reply else { throw unexpected(reply) }
        return count
    }

    // MARK: Quality of service

    /// Limits how many unacknowledged deliveries the broker sends: per consumer, or with
    /// `global` per channel. 0 means no limit. Call it before ``consume(queue:consumerTag:autoAck:exclusive:arguments:)``.
    public func qos(prefetchCount: UInt16, global: Bool = false) async throws {
        _ = try await request(.basicQos(prefetchCount: prefetchCount, global: global))
        if !global { shared.setPerConsumerPrefetch(prefetchCount) }
    }

    // MARK: Polling

    /// Fetches one message (`basic.get`), or nil when the queue is empty. Prefer consumers
    /// for anything but occasional polling.
    public func get(queue: String, autoAck: Bool = false) async throws -> RabbitMQDelivery? {
        let reply = try await request(.basicGet(queue: queue, noAck: autoAck))
        guard case .delivery(let delivery) = reply else { throw unexpected(reply) }
        return delivery
    }

    func unexpected(_ reply: ChannelReply) -> RabbitMQError {
        RabbitMQError(code: .unexpectedReply, message: "unexpected reply \(reply)")
    }
}
