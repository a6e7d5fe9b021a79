import RabbitMQ

/// A durable topic exchange for events: each envelope is published with its type
/// (`service.entity.action`) as routing key, and subscribers bind patterns where `*` matches
/// one word and `#` zero or more.
///
/// Events carry the headers `event_type` and `version`, the correlation id and the app id
/// (the metadata `source`). Every subscription queue has a dead-letter exchange, so a
/// rejected or undecodable event is kept, not lost.
///
/// ```swift
/// let events = try await RabbitMQTopicExchange.declare("events", on: connection)
/// let audit = try await events.subscribe(Order.self, queue: "audit", patterns: ["orders.#"])
/// try await events.publish(RabbitMQEnvelope(type: "orders.order.created", data: order))
/// ```
public struct RabbitMQTopicExchange: Sendable {
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
    ///   - name: The exchange's name.
    ///   - connection: The connection to open the handle's channel on.
    ///   - durable: Survive a broker restart. Default: true.
    /// - Throws: `RabbitMQError` (406 when it exists with another type or durability).
    public static func declare(
        _ name: String, on connection: RabbitMQConnection, durable: Bool = true
    ) async throws -> Self {
        Self(name: name, channel: try await ExchangeSetup.open(name, type: .topic, durable: durable, on: connection))
    }

    /// The name of the direct exchange that subscription queues dead-letter to by default:
    /// `<name>.dead-letter`.
    public var deadLetterExchange: String { name + ".dead-letter" }

    /// Publishes an event with routing key = its type, and waits for the broker's confirmation.
    ///
    /// - Parameters:
    ///   - envelope: The event; its type is the routing key.
    ///   - headers: Extra headers; `event_type` and `version` are always set. Default: none.
    ///   - mandatory: Fail when no subscriber's pattern matches. Default: false (an event
    ///     nobody listens to is not an error).
    /// - Throws: ``RabbitMQPatternsError`` (`nacked`, `unroutable`, `invalidEnvelope`) or
    ///   `RabbitMQError`.
    public func publish<Payload>(
        _ envelope: RabbitMQEnvelope<Payload>, headers: RabbitMQFieldTable = [:], mandatory: Bool = false
    ) async throws {
        var headers = headers
        headers["event_type"] = .string(envelope.type)
        headers["version"] = .string(envelope.version)
        try await publisher.usable().publishConfirmed(
            envelope, exchange: name, routingKey: envelope.type, headers: headers, mandatory: mandatory)
    }

    /// Declares a durable queue bound with each pattern, with a dead-letter exchange, and
    /// consumes it on a channel of its own with manual acknowledgements.
    ///
    /// Unless `options` names a dead-letter exchange, the queue dead-letters to
    /// ``deadLetterExchange`` with its own name as routing key, and a durable queue
    /// `<queue>.dead-letter` bound there keeps its dead letters
    /// (``RabbitMQSubscription/deadLetterQueue``).
    ///
    /// - Parameters:
    ///   - type: The payload type to decode each message's `data` as.
    ///   - queue: The queue name (not empty: the dead-letter queue is named after it).
    ///   - patterns: Binding patterns such as `orders.*.created` or `billing.#` (at least one).
    ///   - options: Durability, TTL, length limit, overflow, dead-lettering. Default: durable.
    ///   - prefetch: Most unacknowledged messages at once. Default: 10.
    ///   - onUndecodable: Called with each delivery that is not a valid envelope, after it was
    ///     rejected into the dead-letter exchange. Default: nil (it is still counted and logged).
    public func subscribe<Payload>(
        _ type: Payload.Type, queue: String, patterns: [String], options: RabbitMQQueueOptions = .init(),
        prefetch: UInt16 = 10, onUndecodable: (@Sendable (RabbitMQUndecodableDelivery) -> Void)? = nil
    ) async throws -> RabbitMQSubscription<Payload> {
        guard !queue.isEmpty else { throw RabbitMQPatternsError.invalidConfiguration("a topic queue needs a name") }
        guard !patterns.isEmpty else { throw RabbitMQPatternsError.invalidConfiguration("no binding patterns") }
        return try await ExchangeSetup.subscribeNamed(
            queue: queue, to: name, keys: patterns, deadLetterExchange: deadLetterExchange, options: options,
            prefetch: prefetch, on: channel.connection, onUndecodable: onUndecodable)
    }

    /// Closes the handle's channel (the exchange stays).
    public func close() async throws {
        try await publisher.close()
    }
}
