import RabbitMQ

/// Opening the confirm-mode channel an exchange handle publishes on, and the dead-letter
/// topology of the subscriptions.
enum ExchangeSetup {
    static func open(
        _ name: String, type: RabbitMQExchangeType, durable: Bool, on connection: RabbitMQConnection
    ) async throws -> RabbitMQChannel {
        let channel = try await connection.openChannel()
        do {
            try await channel.exchangeDeclare(name, type: type, durable: durable)
            try await channel.confirmSelect()
            return channel
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// A subscription on a named queue bound to `exchange` with each of `keys` (a direct
    /// exchange's routing keys, a topic exchange's patterns), dead-lettering into its own
    /// `<queue>.dead-letter` through `deadLetterExchange` unless `options` name a target.
    static func subscribeNamed<Payload>(
        queue: String, to exchange: String, keys: [String], deadLetterExchange: String, options: RabbitMQQueueOptions,
        prefetch: UInt16, on connection: RabbitMQConnection,
        onUndecodable: (@Sendable (RabbitMQUndecodableDelivery) -> Void)?
    ) async throws -> RabbitMQSubscription<Payload> {
        let deadLetters =
            options.deadLetterExchange == nil
            ? DeadLetters(exchange: deadLetterExchange, exchangeType: .direct, queue: queue + ".dead-letter", routingKey: queue)
            : nil
        let arguments = try (deadLetters?.applied(to: options) ?? options).queueArguments()
        return try await .start(
            on: connection, prefetch: prefetch, deadLetterQueue: deadLetters?.queue, onUndecodable: onUndecodable
        ) { channel in
            try await deadLetters?.declare(on: channel)
            let declared = try await channel.queueDeclare(queue, durable: options.durable, arguments: arguments)
            for key in keys {
                try await channel.queueBind(queue: declared.name, exchange: exchange, routingKey: key)
            }
            return declared.name
        }
    }

    /// Where a subscription queue's dead letters go by default: a durable exchange and a durable
    /// queue bound to it, so that nothing the subscription rejects is dropped.
    struct DeadLetters {
        /// The dead-letter exchange (`<exchange>.dead-letter`).
        var exchange: String
        /// Direct for named queues (each dead-letters with its own name as routing key), fanout
        /// for the fanout's server-named ones (whose names change on recovery).
        var exchangeType: RabbitMQExchangeType
        /// The durable queue that keeps them.
        var queue: String
        /// The key `queue` is bound with, and the queue's `x-dead-letter-routing-key`.
        var routingKey: String?

        /// `options` with this as their dead-letter target.
        func applied(to options: RabbitMQQueueOptions) -> RabbitMQQueueOptions {
            var options = options
            options.deadLetterExchange = exchange
            options.deadLetterRoutingKey = routingKey
            return options
        }

        func declare(on channel: RabbitMQChannel) async throws {
            try await channel.exchangeDeclare(exchange, type: exchangeType, durable: true)
            try await channel.queueDeclare(queue, durable: true)
            try await channel.queueBind(queue: queue, exchange: exchange, routingKey: routingKey ?? "")
        }
    }
}
