extension RabbitMQRetryQueue {
    /// The retry ladder and how the consumer takes messages.
    public struct Configuration: Sendable, Hashable {
        /// The delay before each retry: a failed first attempt waits `delays[0]`, a failed
        /// second attempt `delays[1]`, and so on; when they are used up the message is parked.
        /// Each delay is the message TTL of a delay queue, in whole milliseconds (at least 1).
        /// Empty: no retries, a failure parks at once. Default: 1 s, 5 s, 25 s.
        public var delays: [Duration]
        /// Declare the exchange and queues durable (and publish persistent messages).
        /// Default: true.
        public var durable: Bool
        /// How many messages the consumer handles at once; also its prefetch count.
        /// Default: 1.
        public var concurrency: UInt16

        /// Creates a configuration; see each property for its default.
        public init(
            delays: [Duration] = [.seconds(1), .seconds(5), .seconds(25)], durable: Bool = true, concurrency: UInt16 = 1
        ) {
            self.delays = delays
            self.durable = durable
            self.concurrency = concurrency
        }

        /// Checks the delays and concurrency.
        ///
        /// - Throws: ``RabbitMQPatternsError`` (`invalidConfiguration`).
        public func validate() throws(RabbitMQPatternsError) {
            for delay in delays where delay.wholeMilliseconds < 1 {
                throw .invalidConfiguration("retry delays must be at least 1 ms")
            }
            guard concurrency > 0 else { throw .invalidConfiguration("concurrency must be at least 1") }
        }
    }
}
