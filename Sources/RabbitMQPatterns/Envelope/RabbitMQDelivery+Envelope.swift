import RabbitMQ

extension RabbitMQDelivery {
    /// Decodes this delivery's body as an envelope.
    ///
    /// ```swift
    /// let envelope = try delivery.envelope(OrderCreated.self)
    /// ```
    /// - Throws: ``RabbitMQPatternsError`` (`invalidEnvelope`) naming the missing or mistyped field.
    public func envelope<Payload>(_ type: Payload.Type = Payload.self) throws(RabbitMQPatternsError)
        -> RabbitMQEnvelope<Payload>
    {
        try RabbitMQEnvelope<Payload>(decoding: body)
    }
}
