import RabbitMQ

/// Opening the confirm-mode channel an exchange handle publishes on.
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
}
