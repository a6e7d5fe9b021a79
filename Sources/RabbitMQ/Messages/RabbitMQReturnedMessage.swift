/// A message the broker could not route and sent back (`basic.return`), because it was
/// published with `mandatory: true`.
public struct RabbitMQReturnedMessage: Sendable, Hashable {
    /// Why it came back, usually 312 NO_ROUTE.
    public var replyCode: UInt16
    /// The broker's explanation, for example `NO_ROUTE`.
    public var replyText: String
    /// The exchange it was published to.
    public var exchange: String
    /// The routing key it was published with.
    public var routingKey: String
    /// Its properties.
    public var properties: RabbitMQProperties
    /// Its body.
    public var body: [UInt8]
}
