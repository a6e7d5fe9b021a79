import RabbitMQ

/// One message `rmq publish` is about to send.
struct OutgoingMessage: Sendable {
    var body: [UInt8]
    var properties: RabbitMQProperties
}
