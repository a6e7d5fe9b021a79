import RabbitMQ

/// A durable direct exchange: envelopes are routed to the queues bound with exactly their
/// routing key. Work queues, commands to one service, per-region streams.
///
/// The handle owns a channel in confirm mode, so ``publish(_:routingKey:mandatory:)``
/// returns only once the broker has the message.
///
/// ```swift
/// let orders = try await RabbitMQDirectExchange.declare("orders", on: connection)
/// let eu = try await orders.subscribe(Order.self, queue: "orders.eu", bindingKeys: ["eu"],
///                                     options: .init(messageTTL: .seconds(3600), maxLength: 10_000))
/// try await orders.publish(RabbitMQEnvelope(type: "orders.order.placed", data: order), routingKey: "eu")
/// ```
public struct RabbitMQDirectExchange: Sendable {
    /// The exchange name.
    public let name: String
    /// The confirm-mode channel this handle publishes on. When the broker closes it (a
    /// publish it refused), the next publish opens a new one: one bad message does not break
    /// the handle.
    public var channel: RabbitMQChannel { publisher.current }
    private let publisher: PublishingChannel

    init(name: String, channel: RabbitMQChannel) {
        self.name = name
        self.publisher = PublishingChannel(channel)
    }

    /// Declares the exchange (or checks that an identical one exists) on a new channel.
    ///
    /// - Parameters:
    ///   - name: The exchange name.
    ///   - connection: The connection to open the handle's channel on.
    ///   - durable: Survive a broker restart. Default: true.
    /// - Throws: `RabbitMQError` (406 when it exists with another type or durability).
    public static func declare(
        _ name: String, on connection: RabbitMQConnection, durable: Bool = true
    ) async throws -> Self {
        Self(name: name, channel: try await ExchangeSetup.open(name, type: .direct, durable: durable, on: connection))
    }

    /// Publishes an envelope with `routingKey` and waits for the broker's confirmation.
    ///
    /// - Parameters:
    ///   - envelope: The envelope to publish.
    ///   - routingKey: The key queues are bound with.
    ///   - mandatory: Fail when no queue is bound for the key, instead of losing the message
    ///     silently. Default: true.
    /// - Throws: ``RabbitMQPatternsError`` (`unroutable`, `nacked`, `invalidEnvelope`) or
    ///   `RabbitMQError`.
    public func publish<Payload>(
        _ envelope: RabbitMQEnvelope<Payload>, routingKey: String, mandatory: Bool = true
    ) async throws {
        try await publisher.usable().publishConfirmed(envelope, exchange: name, routingKey: routingKey, mandatory: mandatory)
    }

    /// The name of the direct exchange that subscription queues dead-letter to by default:
    /// `<name>.dead-letter`.
    public var deadLetterExchange: String { name + ".dead-letter" }

    /// Declares a queue with `options`, binds it with every key in `bindingKeys`, and consumes
    /// it on a channel of its own with manual acknowledgements.
    ///
    /// Unless `options` names a dead-letter exchange, the queue dead-letters to
    /// ``deadLetterExchange`` with its own name as routing key, and a durable queue
    /// `<queue>.dead-letter` bound there keeps what the subscription rejects, undecodable
    /// deliveries included (``RabbitMQSubscription/deadLetterQueue``). A queue declared
    /// before without those arguments makes this fail with 406; delete it or pass the
    /// dead-letter exchange it has.
    ///
    /// The queue needs a name: a nameless (server-named) queue is refused, because its
    /// dead-letter queue is named after it and its name would change on every recovery. A
    /// private queue per subscriber is what ``RabbitMQFanoutExchange`` gives.
    ///
    /// - Parameters:
    ///   - type: The payload type to decode each message's `data` as.
    ///   - queue: The queue name (not empty).
    ///   - bindingKeys: The routing keys to bind (at least one).
    ///   - options: Durability, TTL, length limit, overflow, dead-lettering. Default: durable.
    ///   - prefetch: Most unacknowledged messages at once. Default: 10.
    ///   - onUndecodable: Called with each delivery that is not a valid envelope, after it was
    ///     rejected into the dead-letter exchange. Default: nil (it is still counted and logged).
    /// - Throws: ``RabbitMQPatternsError`` (`invalidConfiguration`) or `RabbitMQError`.
    public func subscribe<Payload>(
        _ type: Payload.Type, queue: String, bindingKeys: [String], options: RabbitMQQueueOptions = .init(),
        prefetch: UInt16 = 10, onUndecodable: (@Sendable (RabbitMQUndecodableDelivery) -> Void)? = nil
    ) async throws -> RabbitMQSubscription<Payload> {
        guard !queue.isEmpty else {
            throw RabbitMQPatternsError.invalidConfiguration("a direct subscription's queue needs a name")
        }
        guard !bindingKeys.isEmpty else { throw RabbitMQPatternsError.invalidConfiguration("no binding keys") }
        return try await ExchangeSetup.subscribeNamed(
            queue: queue, to: name, keys: bindingKeys, deadLetterExchange: deadLetterExchange, options: options,
            prefetch: prefetch, on: channel.connection, onUndecodable: onUndecodable)
    }

    /// Closes the handle's channel (the exchange stays).
    public func close() async throws {
        try await publisher.close()
    }
}
