import RabbitMQ

/// A delivery a ``RabbitMQSubscription`` could not decode as an envelope, as its
/// `onUndecodable` callback sees it. The subscription has rejected it without requeue by then,
/// so the broker has dead-lettered it (into ``RabbitMQSubscription/deadLetterQueue`` unless the
/// queue options named another dead-letter exchange). The callback runs on the task that
/// iterates the subscription, before the iterator returns the next message.
public struct RabbitMQUndecodableDelivery: Sendable {
    /// The delivery as it arrived: body, properties, routing key.
    public let delivery: RabbitMQDelivery
    /// Why it is not an envelope (`invalidEnvelope`, with the offending field when known).
    public let error: RabbitMQPatternsError
    /// The queue it came from (its current name, for a server-named queue).
    public let queue: String
    /// Where it was dead-lettered to, when the subscription declared that queue.
    public let deadLetterQueue: String?
}
