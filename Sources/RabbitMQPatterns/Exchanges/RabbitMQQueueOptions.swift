import RabbitMQ

/// How a pattern declares a consumer queue: durability, length and age limits, overflow
/// behaviour and dead-lettering, as RabbitMQ queue arguments.
///
/// ```swift
/// let options = RabbitMQQueueOptions(messageTTL: .seconds(60), maxLength: 10_000, overflow: .rejectPublish)
/// ```
public struct RabbitMQQueueOptions: Sendable, Hashable {
    /// What a queue at its ``maxLength`` does with a new message (`x-overflow`).
    public struct Overflow: Sendable, Hashable, CustomStringConvertible {
        /// The argument value sent to the broker.
        public let name: String
        /// An overflow behaviour by its argument value.
        public init(_ name: String) { self.name = name }
        /// Drop (or dead-letter) the oldest message to make room: the broker default.
        public static let dropHead = Overflow("drop-head")
        /// Refuse the new message: a confirmed publish is nacked.
        public static let rejectPublish = Overflow("reject-publish")
        /// Refuse the new message and dead-letter it.
        public static let rejectPublishDeadLetter = Overflow("reject-publish-dlx")
        /// The argument value.
        public var description: String { name }
    }

    /// Survive a broker restart. Default: true.
    public var durable: Bool
    /// Messages older than this are dropped or dead-lettered (`x-message-ttl`, whole
    /// milliseconds). Default: nil, no limit.
    public var messageTTL: Duration?
    /// The most messages the queue holds (`x-max-length`). Default: nil, no limit.
    public var maxLength: Int?
    /// What happens when ``maxLength`` is reached (`x-overflow`). Default: nil, the broker's
    /// `drop-head`.
    public var overflow: Overflow?
    /// Where rejected, expired and dropped messages go (`x-dead-letter-exchange`). Default: nil.
    public var deadLetterExchange: String?
    /// The routing key dead letters get (`x-dead-letter-routing-key`). Default: nil, their own.
    public var deadLetterRoutingKey: String?
    /// Declare a quorum queue (`x-queue-type: quorum`; replicated, always durable). Default: false.
    public var quorum: Bool
    /// Further queue arguments, sent as given. Default: none.
    public var arguments: RabbitMQFieldTable

    /// Creates options; every limit is off by default.
    public init(
        durable: Bool = true, messageTTL: Duration? = nil, maxLength: Int? = nil, overflow: Overflow? = nil,
        deadLetterExchange: String? = nil, deadLetterRoutingKey: String? = nil, quorum: Bool = false,
        arguments: RabbitMQFieldTable = [:]
    ) {
        self.durable = durable
        self.messageTTL = messageTTL
        self.maxLength = maxLength
        self.overflow = overflow
        self.deadLetterExchange = deadLetterExchange
        self.deadLetterRoutingKey = deadLetterRoutingKey
        self.quorum = quorum
        self.arguments = arguments
    }

    /// The queue arguments these options stand for.
    ///
    /// - Throws: ``RabbitMQPatternsError`` (`invalidConfiguration`) for a negative TTL or
    ///   length, or a quorum queue that is not durable.
    public func queueArguments() throws(RabbitMQPatternsError) -> RabbitMQFieldTable {
        var table = arguments
        if let messageTTL {
            guard messageTTL >= .zero else { throw .invalidConfiguration("messageTTL must not be negative") }
            table["x-message-ttl"] = .int64(messageTTL.wholeMilliseconds)
        }
        if let maxLength {
            guard maxLength >= 0 else { throw .invalidConfiguration("maxLength must not be negative") }
            table["x-max-length"] = .int64(Int64(maxLength))
        }
        if let overflow { table["x-overflow"] = .string(overflow.name) }
        if let deadLetterExchange { table["x-dead-letter-exchange"] = .string(deadLetterExchange) }
        if let deadLetterRoutingKey { table["x-dead-letter-routing-key"] = .string(deadLetterRoutingKey) }
        if quorum {
            guard durable else { throw .invalidConfiguration("a quorum queue is always durable") }
            table["x-queue-type"] = "quorum"
        }
        return table
    }
}

extension Duration {
    /// The duration in whole milliseconds (rounded down), as AMQP TTLs are written.
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
