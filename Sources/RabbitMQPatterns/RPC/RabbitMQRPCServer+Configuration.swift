extension RabbitMQRPCServer {
    /// How an ``RabbitMQRPCServer`` takes requests.
    public struct Configuration: Sendable {
        /// Declare the request queue before consuming (non-exclusive, so several servers can
        /// share it). Default: true.
        public var declareQueue: Bool
        /// Declare the request queue durable. Default: true: the queue is shared by servers and
        /// not exclusive, and RabbitMQ 4.3 refuses transient non-exclusive queues by default
        /// (`RabbitMQError.Code.deprecatedFeature`). Declaring an existing transient queue
        /// durable fails with 406 PRECONDITION_FAILED: set false to keep serving one.
        public var durable: Bool
        /// How many requests are handled at once; also the prefetch count, so the broker never
        /// hands this server a request it is not working on yet (a queued request can still
        /// expire; one sitting in our buffer could not). Default: 10.
        public var concurrency: UInt16
        /// Stop after answering this many requests; requests beyond it are left to other
        /// servers. Default: nil, serve until cancelled.
        public var requestLimit: Int?
        /// Answer a handler error other than a `permanentFailure` with its description
        /// instead of a fixed text. Default: false: a description may name what the caller
        /// should not see (a host, a path, a query); turn it on for callers you trust.
        public var repliesWithErrorDescriptions: Bool

        /// Creates a configuration; see each property for its default.
        public init(
            declareQueue: Bool = true, durable: Bool = true, concurrency: UInt16 = 10, requestLimit: Int? = nil,
            repliesWithErrorDescriptions: Bool = false
        ) {
            self.declareQueue = declareQueue
            self.durable = durable
            self.concurrency = concurrency
            self.requestLimit = requestLimit
            self.repliesWithErrorDescriptions = repliesWithErrorDescriptions
        }
    }
}
