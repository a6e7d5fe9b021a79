import RabbitMQ

/// A durable fanout exchange: every envelope goes to every bound queue. Cache
/// invalidations, configuration changes, notifications every instance must see.
///
/// Each subscriber gets its own server-named, exclusive queue, deleted when the subscription
/// is cancelled or its connection closes: a subscriber sees what is published while it
/// listens, nothing before.
///
/// ```swift
/// let notices = try await RabbitMQFanoutExchange.declare("notices", on: connection)
/// let mine = try await notices.subscribe(Notice.self)
/// try await notices.publish(RabbitMQEnvelope(type: "config.changed", data: notice))
/// ```
public struct RabbitMQFanoutExchange: Sendable {
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
        Self(name: name, channel: try await ExchangeSetup.open(name, type: .fanout, durable: durable, on: connection))
    }

    /// Broadcasts an envelope to every subscriber and waits for the broker's confirmation.
    /// With no subscriber the message is dropped, which is not an error.
    ///
    /// - Throws: ``RabbitMQPatternsError`` (`nacked`, `invalidEnvelope`) or `RabbitMQError`.
    public func publish<Payload>(_ envelope: RabbitMQEnvelope<Payload>) async throws {
        try await publisher.usable().publishConfirmed(envelope, exchange: name, routingKey: "")
    }

    /// Declares a server-named exclusive queue, binds it, and consumes it on a channel of its
    /// own with manual acknowledgements.
    ///
    /// - Parameters:
    ///   - type: The payload type to decode each message's `data` as.
    ///   - prefetch: Most unacknowledged messages at once. Default: 10.
    public func subscribe<Payload>(_ type: Payload.Type, prefetch: UInt16 = 10) async throws
        -> RabbitMQSubscription<Payload>
    {
        try await .start(on: channel.connection, prefetch: prefetch) { channel in
            // Auto-delete as well as exclusive: cancelling the subscription removes the queue
            // even while the connection stays open.
            let queue = try await channel.queueDeclare("", exclusive: true, autoDelete: true)
            try await channel.queueBind(queue: queue.name, exchange: name)
            return queue.name
        }
    }

    /// Closes the handle's channel (the exchange stays).
    public func close() async throws {
        try await publisher.close()
    }
}
