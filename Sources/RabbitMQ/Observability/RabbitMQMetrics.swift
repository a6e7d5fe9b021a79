/// The names of the metrics a connection reports through swift-metrics.
///
/// Every metric carries one dimension, `connection`, whose value is the connection's
/// ``RabbitMQConnection/name``. They go to ``RabbitMQConfiguration/metricsFactory``, or to the
/// factory bootstrapped with `MetricsSystem` when the connection opens.
///
/// Counters count messages, not frames or calls: an acknowledgement with `multiple` counts
/// every delivery it settles, a `basic.ack` from the broker with `multiple` every publish it
/// confirms. The I/O thread counts and reports once per turn of its loop, so a busy
/// connection makes one call per counter for a batch of messages, not one per message.
public enum RabbitMQMetrics {
    /// Gauge: 1 while the connection is open, 0 while it recovers and after it closed.
    public static let connectionsOpen = "rabbitmq.connections.open"
    /// Gauge: the channels the application holds open on the connection (kept across a
    /// recovery, which reopens them).
    public static let channelsOpen = "rabbitmq.channels.open"
    /// Counter: messages written to the socket (`basic.publish`), republishes after a
    /// recovery included.
    public static let published = "rabbitmq.messages.published"
    /// Counter: publishes the broker confirmed (`basic.ack` on a confirm-mode channel).
    public static let confirmed = "rabbitmq.messages.confirmed"
    /// Counter: publishes the broker refused (`basic.nack` on a confirm-mode channel).
    public static let nacked = "rabbitmq.messages.nacked"
    /// Counter: mandatory publishes the broker returned as unroutable (`basic.return`).
    public static let returned = "rabbitmq.messages.returned"
    /// Counter: messages delivered to consumers (`basic.deliver`).
    public static let delivered = "rabbitmq.messages.delivered"
    /// Counter: of those, deliveries the broker marked `redelivered`.
    public static let redelivered = "rabbitmq.messages.redelivered"
    /// Counter: deliveries the application acknowledged (`basic.ack`).
    public static let consumerAcked = "rabbitmq.consumer.acked"
    /// Counter: deliveries the application negatively acknowledged (`basic.nack`).
    public static let consumerNacked = "rabbitmq.consumer.nacked"
    /// Counter: deliveries the application rejected (`basic.reject`).
    public static let consumerRejected = "rabbitmq.consumer.rejected"
    /// Counter: recoveries completed (a lost connection back, with its topology and consumers).
    public static let recoveries = "rabbitmq.recoveries"
    /// Timer: how long each recovery took, from the loss to the recovered connection.
    public static let recoveryDuration = "rabbitmq.recovery.duration"
    /// Timer: how long each `connection.blocked` lasted (the broker's resource alarm).
    public static let blockedDuration = "rabbitmq.blocked.duration"
    /// Gauge: publishes queued for the I/O thread and not yet written (at most
    /// ``RabbitMQConfiguration/publishBufferLimit``).
    public static let publishBuffered = "rabbitmq.publish.buffered"
    /// Gauge: publishes awaiting the broker's confirmation, over all confirm-mode channels.
    public static let confirmsOutstanding = "rabbitmq.confirms.outstanding"

    /// The dimension every metric carries; its value is the connection's name.
    public static let connectionDimension = "connection"
}
