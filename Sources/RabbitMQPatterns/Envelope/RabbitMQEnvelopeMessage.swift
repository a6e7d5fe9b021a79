import RabbitMQ

/// A delivery whose body decoded as a ``RabbitMQEnvelope``, as a ``RabbitMQSubscription``
/// yields it. Settle it once with ``ack()`` or ``reject(requeue:)``.
public struct RabbitMQEnvelopeMessage<Payload: Codable & Sendable>: Sendable {
    /// The decoded envelope.
    public let envelope: RabbitMQEnvelope<Payload>
    /// The delivery it came in (exchange, routing key, properties, headers, redelivered flag).
    public let delivery: RabbitMQDelivery

    /// Creates a message from a delivery and its decoded envelope.
    public init(envelope: RabbitMQEnvelope<Payload>, delivery: RabbitMQDelivery) {
        self.envelope = envelope
        self.delivery = delivery
    }

    /// The payload, ``RabbitMQEnvelope/data``.
    public var data: Payload { envelope.data }

    /// Acknowledges the message: the broker forgets it.
    public func ack() throws(RabbitMQError) {
        try delivery.ack()
    }

    /// Rejects the message. Without requeue (the default) it goes to the queue's dead-letter
    /// exchange, or is dropped when the queue has none; requeueing a message that always
    /// fails makes a hot loop, so prefer ``RabbitMQRetryQueue`` for retries.
    public func reject(requeue: Bool = false) throws(RabbitMQError) {
        try delivery.reject(requeue: requeue)
    }
}
