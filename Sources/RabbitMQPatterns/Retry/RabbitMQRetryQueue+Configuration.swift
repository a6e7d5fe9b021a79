import RabbitMQ

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
        /// Declare every queue as a quorum queue (replicated; needs ``durable``). Queues that
        /// exist with the other type make ``RabbitMQRetryQueue/declare(_:on:configuration:)``
        /// fail with 406. Default: false (classic queues).
        public var quorum: Bool
        /// With ``quorum``: how many times the work queue hands out a message that comes back
        /// unsettled (its consumer stopped or crashed while handling it) before it parks it.
        /// Nil: the broker's default, 20 from RabbitMQ 4.0, none on 3.x. Default: nil.
        public var deliveryLimit: RabbitMQQueueType.DeliveryLimit?
        /// Give the work queue the parking queue as its dead-letter target
        /// (`x-dead-letter-exchange` "", `x-dead-letter-routing-key` `N.dead-letter`), so that
        /// what the broker itself gives up on is parked instead of dropped: a quorum queue's
        /// delivery limit, a message TTL or a length limit set by a policy. False declares
        /// the work queue as versions without this setting did (a classic work queue declared
        /// by one of them, without these arguments, makes
        /// ``RabbitMQRetryQueue/declare(_:on:configuration:)`` fail with 406 while this is
        /// true). Default: true.
        public var workQueueDeadLetters: Bool

        /// Creates a configuration; see each property for its default.
        public init(
            delays: [Duration] = [.seconds(1), .seconds(5), .seconds(25)], durable: Bool = true, concurrency: UInt16 = 1,
            quorum: Bool = false, deliveryLimit: RabbitMQQueueType.DeliveryLimit? = nil, workQueueDeadLetters: Bool = true
        ) {
            self.delays = delays
            self.durable = durable
            self.concurrency = concurrency
            self.quorum = quorum
            self.deliveryLimit = deliveryLimit
            self.workQueueDeadLetters = workQueueDeadLetters
        }

        /// Checks the delays, concurrency and queue type.
        ///
        /// - Throws: ``RabbitMQPatternsError`` (`invalidConfiguration`).
        public func validate() throws(RabbitMQPatternsError) {
            for delay in delays where delay.wholeMilliseconds < 1 {
                throw .invalidConfiguration("retry delays must be at least 1 ms")
            }
            guard concurrency > 0 else { throw .invalidConfiguration("concurrency must be at least 1") }
            if quorum {
                guard durable else { throw .invalidConfiguration("quorum queues are always durable") }
            } else {
                guard deliveryLimit == nil else { throw .invalidConfiguration("a delivery limit needs quorum queues") }
            }
        }
    }
}
