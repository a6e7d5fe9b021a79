import Synchronization

extension RabbitMQChannel {
    /// Starts a consumer on `queue` and returns its deliveries as an `AsyncSequence`.
    ///
    /// - Parameters:
    ///   - consumerTag: A tag unique on this channel; empty lets the library choose one.
    ///   - autoAck: The broker considers a message acknowledged as soon as it sends it
    ///     (`no-ack`); fast, but messages in flight are lost if the consumer dies, and
    ///     prefetch no longer bounds the buffer.
    ///   - exclusive: No other consumer may consume from the queue.
    ///   - arguments: Consumer arguments, for example `x-priority`.
    /// - Throws: ``RabbitMQError`` (404 when the queue does not exist, which closes the channel).
    public func consume(
        queue: String, consumerTag: String = "", autoAck: Bool = false, exclusive: Bool = false,
        arguments: RabbitMQFieldTable = [:]
    ) async throws -> RabbitMQConsumer {
        try await consume(
            queue: queue, consumerTag: consumerTag, autoAck: autoAck, exclusive: exclusive, arguments: arguments,
            handler: nil)
    }

    /// For this package's own modules (the RPC client's reply consumer): `handler` runs on
    /// the connection's I/O thread for every delivery, so a reply reaches its caller with one
    /// thread hand-off instead of two. It must return at once: no blocking, no waiting, no
    /// user code. The returned consumer yields no deliveries; iterating it waits for the end
    /// of the consumer (and throws its failure), as for ``consume(queue:consumerTag:autoAck:exclusive:arguments:)``.
    package func consume(
        queue: String, consumerTag: String = "", autoAck: Bool = false, exclusive: Bool = false,
        arguments: RabbitMQFieldTable = [:], handler: (@Sendable (RabbitMQDelivery) -> Void)?
    ) async throws -> RabbitMQConsumer {
        try shared.checkOpen()
        let tag = consumerTag.isEmpty ? Self.makeConsumerTag(channel: shared) : consumerTag
        let request = ConsumeRequest(
            queue: queue, consumerTag: tag, noAck: autoAck, exclusive: exclusive, arguments: arguments)
        try request.check(frameMax: shared.frameMax)
        let buffer = DeliveryBuffer()
        let sink = ConsumerSink(buffer: buffer, noAck: autoAck, handler: handler)
        let shared = self.shared
        _ = try await shared.core.call({ .consume(shared, request, sink, $0) }, refused: { buffer.finish(throwing: $0) })
        // Installed only after consume-ok: before that there is nothing to cancel.
        buffer.setOnCancel {
            shared.core.submitIfRunning(.cancelConsumer(shared, consumerTag: tag, nil))
        }
        return RabbitMQConsumer(consumerTag: tag, channel: self, buffer: buffer)
    }

    private static let consumerCounter = Atomic<UInt64>(0)

    private static func makeConsumerTag(channel: ChannelShared) -> String {
        let n = consumerCounter.add(1, ordering: .relaxed).newValue
        return "swift-rmq.\(channel.core.name).\(channel.number).\(n)"
    }
}
