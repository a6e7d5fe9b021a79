extension RabbitMQRPCClient {
    /// How an ``RabbitMQRPCClient`` sends requests and waits for replies.
    public struct Configuration: Sendable {
        /// The exchange requests are published to; with the default exchange the routing key
        /// of a call is the server's queue name. Default: `""`, the default exchange.
        public var exchange: String
        /// How long a call waits for its reply when it sets no timeout of its own.
        /// Default: 30 seconds.
        public var timeout: Duration
        /// Where replies come back to. Default: `.directReplyTo`.
        public var replyQueue: ReplyQueue
        /// Give each request an AMQP expiration equal to its call's timeout, so that a request
        /// still queued when its caller gave up is discarded by the broker instead of being
        /// processed for nobody. Default: true.
        public var expireRequests: Bool

        /// Creates a configuration; see each property for its default.
        public init(
            exchange: String = "", timeout: Duration = .seconds(30), replyQueue: ReplyQueue = .directReplyTo,
            expireRequests: Bool = true
        ) {
            self.exchange = exchange
            self.timeout = timeout
            self.replyQueue = replyQueue
            self.expireRequests = expireRequests
        }
    }
}
