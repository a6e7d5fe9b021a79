/// The type of an exchange: `.direct`, `.topic`, `.fanout`, `.headers`, or any plugin type by name.
public struct RabbitMQExchangeType: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The type name sent to the broker.
    public let name: String
    /// An exchange type by name, for example `"x-delayed-message"`.
    public init(_ name: String) { self.name = name }
    public init(stringLiteral value: String) { self.name = value }
    /// Routes to queues whose binding key equals the routing key.
    public static let direct = RabbitMQExchangeType("direct")
    /// Routes by pattern: `*` matches one word, `#` zero or more.
    public static let topic = RabbitMQExchangeType("topic")
    /// Routes to every bound queue.
    public static let fanout = RabbitMQExchangeType("fanout")
    /// Routes by message headers (`x-match` all or any).
    public static let headers = RabbitMQExchangeType("headers")
    public var description: String { name }
}

/// The broker's answer to a queue declaration.
public struct RabbitMQQueueDeclareResult: Sendable, Hashable {
    /// The queue's name (chosen by the broker when declared with an empty name).
    public var name: String
    /// Messages ready in the queue.
    public var messageCount: UInt32
    /// Active consumers on the queue.
    public var consumerCount: UInt32
}
