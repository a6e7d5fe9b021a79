import Tracing

/// The span attribute names this package records, from OpenTelemetry's semantic
/// conventions for messaging (and their RabbitMQ part), kept in one place.
package enum MessagingAttributes {
    static let system = "messaging.system"
    static let operationType = "messaging.operation.type"
    static let operationName = "messaging.operation.name"
    static let destinationName = "messaging.destination.name"
    static let routingKey = "messaging.rabbitmq.destination.routing_key"
    static let messageID = "messaging.message.id"
    static let conversationID = "messaging.message.conversation_id"
    static let bodySize = "messaging.message.body.size"
    static let deliveryTag = "messaging.rabbitmq.message.delivery_tag"
    static let serverAddress = "server.address"
    static let serverPort = "server.port"
    static let errorType = "error.type"

    /// `messaging.system`'s value.
    static let rabbitMQ = "rabbitmq"

    /// The attributes of a span that sends (a publish, an RPC call): the operation, and where to.
    static func recordSend(
        _ operation: String, exchange: String, routingKey: String, into attributes: inout SpanAttributes
    ) {
        attributes[operationType] = "send"
        attributes[operationName] = operation
        attributes[destinationName] = destination(exchange: exchange, routingKey: routingKey)
        if !routingKey.isEmpty { attributes[Self.routingKey] = routingKey }
    }

    /// The exchange as spans name it: the default exchange has no name, OpenTelemetry calls
    /// it `amq.default`.
    static func exchangeName(_ exchange: String) -> String {
        exchange.isEmpty ? "amq.default" : exchange
    }

    /// `messaging.destination.name` per the RabbitMQ conventions: `exchange:routing key`
    /// (and `:queue` on consumers), leaving out empty parts, `amq.default` when all are empty.
    static func destination(exchange: String, routingKey: String, queue: String? = nil) -> String {
        let parts = [exchange, routingKey, queue ?? ""].filter { !$0.isEmpty }
        return parts.isEmpty ? "amq.default" : parts.joined(separator: ":")
    }
}
