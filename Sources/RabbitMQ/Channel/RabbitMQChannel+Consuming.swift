import Synchronization

extension RabbitMQChannel {
    /// Starts a consumer on `queue` and returns its deliveries as an `AsyncSequence`.
    ///
    /// - Parameters:
    ///   - queue: The queue to consume from.
    ///   - consumerTag: A tag unique on this channel; empty lets the library choose one.
    ///   - autoAck: The broker considers a message acknowledged as soon as it sends it
    ///     (`no-ack`); fast, but messages in flight are lost if the consumer dies, and
    ///     prefetch no longer bounds the buffer.
    ///   - exclusive: No other consumer may consume from the queue.
    ///   - arguments: Consumer arguments, for example `x-priority`. With `x-stream-offset`
    ///     (a stream consumer; prefer ``consume(stream:offset:prefetch:consumerTag:arguments:)``)
    ///     `autoAck` must be false and the channel needs a prefetch count
    ///     (``qos(prefetchCount:global:)``), as RabbitMQ requires: refused otherwise with
    ///     ``RabbitMQError/Code-swift.struct/invalidConfiguration`` before anything is sent.
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
        try StreamConsumeCheck.check(arguments: arguments, noAck: autoAck, perConsumerPrefetch: shared.perConsumerPrefetch)
        let tag = consumerTag.isEmpty ? Self.makeConsumerTag(channel: shared) : consumerTag
        let request = ConsumeRequest(
            queue: queue, consumerTag: tag, noAck: autoAck, exclusive: exclusive, arguments: arguments)
        try request.check(frameMax: shared.frameMax)
        let buffer = DeliveryBuffer(tracksStreamOffset: arguments[StreamConsumeCheck.offsetArgument] != nil)
        let sink = ConsumerSink(buffer: buffer, noAck: autoAck, handler: handler)
        let shared = self.shared
        _ = try await shared.core.call({ .consume(shared, request, sink, $0) }, refused: { buffer.finish(throwing: $0) })
        // Installed only after consume-ok: before that there is nothing to cancel.
        buffer.setOnCancel {
            shared.core.submitIfRunning(.cancelConsumer(shared, consumerTag: tag, nil))
        }
        return RabbitMQConsumer(consumerTag: tag, channel: self, buffer: buffer)
    }

    /// Starts a consumer on a stream, reading from `offset`, and returns its deliveries as an
    /// `AsyncSequence`. Sets the channel's per-consumer prefetch to `prefetch` first (RabbitMQ
    /// requires one for streams; it also applies to consumers started later on this channel).
    /// Acknowledge every delivery: acks only move the prefetch window, the messages stay in
    /// the stream. Each delivery's ``RabbitMQDelivery/streamOffset`` is its offset.
    ///
    /// ```swift
    /// let consumer = try await channel.consume(stream: "events", offset: .first, prefetch: 100)
    /// for try await delivery in consumer {
    ///     print(delivery.streamOffset ?? 0, delivery.bodyString)
    ///     try delivery.ack()
    /// }
    /// ```
    ///
    /// After a connection recovery the consumer goes on after the last delivery the iterator
    /// handed out (deliveries of the lost connection not handed out yet are dropped, as for
    /// any consumer, and read again). One that had handed out nothing starts from `offset`
    /// again: with `.next`, what was published during the outage is skipped. A delivery the
    /// iterator hands out at the very moment the connection recovers can come once more.
    ///
    /// - Parameters:
    ///   - stream: The stream (a queue declared with ``RabbitMQQueueType/stream``).
    ///   - offset: Where to start. Default: ``RabbitMQStreamOffset/next``.
    ///   - prefetch: How many unacknowledged deliveries the broker sends (at least 1).
    ///   - consumerTag: A tag unique on this channel; empty lets the library choose one.
    ///   - arguments: Further consumer arguments (without `x-stream-offset`).
    /// - Throws: ``RabbitMQError``: ``RabbitMQError/Code-swift.struct/invalidConfiguration``,
    ///   before anything is sent, for a prefetch of 0, an offset over `Int64.max` or an
    ///   offset in `arguments`; 404 when the stream does not exist; 406 when it is not a stream.
    public func consume(
        stream: String, offset: RabbitMQStreamOffset = .next, prefetch: UInt16, consumerTag: String = "",
        arguments: RabbitMQFieldTable = [:]
    ) async throws -> RabbitMQConsumer {
        let arguments = try StreamConsumeCheck.arguments(offset: offset, prefetch: prefetch, arguments: arguments)
        try await qos(prefetchCount: prefetch)
        return try await consume(queue: stream, consumerTag: consumerTag, autoAck: false, arguments: arguments)
    }

    private static let consumerCounter = Atomic<UInt64>(0)

    private static func makeConsumerTag(channel: ChannelShared) -> String {
        let n = consumerCounter.add(1, ordering: .relaxed).newValue
        return "swift-rmq.\(channel.core.name).\(channel.number).\(n)"
    }
}
