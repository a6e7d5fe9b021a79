import RabbitMQ

extension RabbitMQChannel {
    /// Publishes an envelope as JSON with the properties of
    /// ``RabbitMQEnvelope/properties(persistent:headers:)``, without waiting for the broker.
    ///
    /// - Parameters:
    ///   - envelope: The envelope to publish.
    ///   - exchange: The exchange; empty for the default exchange. Default: empty.
    ///   - routingKey: The routing key.
    ///   - persistent: Persistent delivery mode. Default: true.
    ///   - headers: Application headers to add. Default: none.
    ///   - mandatory: Return the message if no queue is bound for it. Default: false.
    /// - Throws: ``RabbitMQPatternsError`` when the payload cannot be encoded,
    ///   `RabbitMQError` when the channel is closed.
    public func publish<Payload>(
        _ envelope: RabbitMQEnvelope<Payload>, exchange: String = "", routingKey: String, persistent: Bool = true,
        headers: RabbitMQFieldTable? = nil, mandatory: Bool = false
    ) async throws {
        try await publish(
            envelope.encodedBody(), exchange: exchange, routingKey: routingKey,
            properties: envelope.properties(persistent: persistent, headers: headers), mandatory: mandatory)
    }

    /// Publishes an envelope on a confirm-mode channel and waits until the broker has it.
    ///
    /// Same parameters as ``publish(_:exchange:routingKey:persistent:headers:mandatory:)``.
    /// - Throws: ``RabbitMQPatternsError`` with code `nacked` when the broker refuses it,
    ///   `unroutable` when it is mandatory and no queue is bound for it; `RabbitMQError`
    ///   when the channel is not in confirm mode or is closed.
    public func publishConfirmed<Payload>(
        _ envelope: RabbitMQEnvelope<Payload>, exchange: String = "", routingKey: String, persistent: Bool = true,
        headers: RabbitMQFieldTable? = nil, mandatory: Bool = false
    ) async throws {
        try await publishConfirmed(
            envelope.encodedBody(), exchange: exchange, routingKey: routingKey,
            properties: envelope.properties(persistent: persistent, headers: headers), mandatory: mandatory)
    }

    /// Publishes bytes on a confirm-mode channel and turns anything but an ack into an error.
    func publishConfirmed(
        _ body: [UInt8], exchange: String, routingKey: String, properties: RabbitMQProperties, mandatory: Bool
    ) async throws {
        let outcome = try await publishAndWaitForConfirm(
            body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
        switch outcome {
        case .acked:
            return
        case .nacked:
            throw RabbitMQPatternsError(
                code: .nacked, message: "the broker refused the message for exchange '\(exchange)', key '\(routingKey)'")
        case .returned(let returned):
            throw RabbitMQPatternsError(
                code: .unroutable,
                message: "no queue is bound to exchange '\(exchange)' for key '\(routingKey)' (\(returned.replyText))")
        }
    }
}
