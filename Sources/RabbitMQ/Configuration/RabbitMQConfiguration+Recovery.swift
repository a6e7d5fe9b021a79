extension RabbitMQConfiguration {
    /// How a connection recovers after it is lost: reconnect with exponential back-off and
    /// jitter, walking the endpoints, then restore channels, topology and consumers, and
    /// re-publish messages whose confirms were pending.
    ///
    /// ```swift
    /// configuration.recovery.initialDelay = .milliseconds(200)
    /// configuration.recovery.maxAttempts = 20
    /// configuration.recovery.topologyFilter.queues = { !$0.hasPrefix("tmp.") }
    /// ```
    public struct Recovery: Sendable {
        /// Recover lost connections at all. When false, a lost connection fails everything
        /// waiting on it, as a closed one does. Default: true.
        public var isEnabled: Bool
        /// Re-declare recorded exchanges, queues and bindings and re-register consumers.
        /// When false only channels (with their prefetch and confirm mode) come back.
        /// Default: true.
        public var recoversTopology: Bool
        /// Which recorded entities to restore. Default: all.
        public var topologyFilter: TopologyFilter
        /// The delay before the first reconnection attempt. Default: 500 ms.
        public var initialDelay: Duration
        /// The longest delay between two attempts. Default: 30 seconds.
        public var maxDelay: Duration
        /// How much the delay grows after each failed attempt (a pass over every endpoint).
        /// Default: 2.
        public var multiplier: Double
        /// The fraction of each delay that is random (0 none, 1 "full jitter"), so many
        /// clients do not reconnect in lock-step. Default: 0.5.
        public var jitter: Double
        /// Give up after this many attempts (each a pass over every endpoint); nil retries
        /// until the connection is closed. Default: nil.
        public var maxAttempts: Int?
        /// Publish again, after recovery and in their original order, the messages whose
        /// confirms were still pending when the connection was lost (at-least-once; the
        /// broker may then hold duplicates). Default: true.
        public var republishUnconfirmed: Bool
        /// How long a publish made during an outage may wait for recovery before it fails
        /// with a `timeout` error. While recovering, at most ``RabbitMQConfiguration/publishBufferLimit``
        /// publishes wait; one more fails at once with `resourceError`. Cancelling the task of
        /// a waiting publish ends its wait with `CancellationError`. Default: 30 seconds.
        public var publishWaitTimeout: Duration

        /// Recovery with the documented defaults.
        public init() {
            isEnabled = true
            recoversTopology = true
            topologyFilter = TopologyFilter()
            initialDelay = .milliseconds(500)
            maxDelay = .seconds(30)
            multiplier = 2
            jitter = 0.5
            maxAttempts = nil
            republishUnconfirmed = true
            publishWaitTimeout = .seconds(30)
        }

        /// No recovery: a lost connection stays lost.
        public static var disabled: Recovery {
            var recovery = Recovery()
            recovery.isEnabled = false
            return recovery
        }
    }

    /// Chooses which recorded entities recovery restores, by name; nil restores all.
    public struct TopologyFilter: Sendable {
        /// Exchanges to re-declare.
        public var exchanges: (@Sendable (String) -> Bool)?
        /// Queues to re-declare (by the name they had before the outage).
        public var queues: (@Sendable (String) -> Bool)?
        /// Bindings to restore, given source exchange, destination and routing key.
        public var bindings: (@Sendable (_ source: String, _ destination: String, _ routingKey: String) -> Bool)?
        /// Consumers to re-register, given consumer tag and queue.
        public var consumers: (@Sendable (_ consumerTag: String, _ queue: String) -> Bool)?

        /// A filter that restores everything.
        public init() {}
    }

    /// The order in which endpoints are tried.
    public struct EndpointSelection: Sendable, Hashable {
        private enum Base: Hashable, Sendable { case inOrder, shuffled }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// The configured order: the first endpoint is the primary.
        public static let inOrder = EndpointSelection(.inOrder)
        /// A random order on every pass, so many clients spread over the cluster.
        public static let shuffled = EndpointSelection(.shuffled)
    }
}
