/// The type of a queue with the arguments that belong to it: `.classic`, `.quorum(...)`
/// (replicated, for work that must not be lost) or `.stream(...)` (an append-only log read
/// from an offset). Used with ``RabbitMQChannel/queueDeclare(_:type:durable:exclusive:autoDelete:arguments:)``,
/// which refuses, before anything is sent, what RabbitMQ refuses for the type: a quorum queue
/// or a stream is always durable, never exclusive, never auto-delete.
///
/// ```swift
/// try await channel.queueDeclare("orders", type: .quorum(deliveryLimit: 5))
/// try await channel.queueDeclare("events", type: .stream(maxLengthBytes: 1 << 30, maxAge: .seconds(86_400)))
/// ```
public struct RabbitMQQueueType: Sendable, Hashable, CustomStringConvertible {
    /// How many times a quorum queue delivers a message that keeps coming back (rejected or
    /// nacked with requeue, or left unacknowledged by a consumer that went away) before it
    /// dead-letters it, or drops it when the queue has no dead-letter exchange.
    public struct DeliveryLimit: Sendable, Hashable, CustomStringConvertible, ExpressibleByIntegerLiteral {
        /// The `x-delivery-limit` value sent: -1 for no limit.
        public let value: Int64

        private init(value: Int64) { self.value = value }

        /// At most `count` returns; 0 dead-letters (or drops) a message at its first return.
        public static func limit(_ count: Int) -> DeliveryLimit { DeliveryLimit(value: Int64(count)) }
        /// No limit: `x-delivery-limit: -1` for RabbitMQ 4.0 and later, and no argument at
        /// all for 3.x, which has no default limit but would take -1 as "drop the message at
        /// its first return". ``RabbitMQChannel/queueDeclare(_:type:durable:exclusive:autoDelete:arguments:)``
        /// asks the broker's version.
        public static let unlimited = DeliveryLimit(value: -1)

        public init(integerLiteral value: Int) { self.value = Int64(value) }

        public var description: String { value < 0 ? "unlimited" : String(value) }
    }

    enum Kind: Sendable, Hashable {
        case classic
        case quorum(deliveryLimit: DeliveryLimit?, initialGroupSize: Int?)
        case stream(maxLengthBytes: Int64?, maxSegmentSizeBytes: Int64?, maxAge: Duration?)
    }

    let kind: Kind

    private init(_ kind: Kind) { self.kind = kind }

    /// A classic queue: sends `x-queue-type: classic`, so that a virtual host whose default
    /// queue type is another one still makes a classic queue.
    public static let classic = RabbitMQQueueType(.classic)

    /// A quorum queue with the broker's defaults: no delivery limit on RabbitMQ 3.x, 20 from
    /// 4.0; replicas on the broker's `quorum_queue.initial_group_size` nodes, or on every node.
    public static let quorum = RabbitMQQueueType(.quorum(deliveryLimit: nil, initialGroupSize: nil))

    /// A quorum queue (`x-queue-type: quorum`): replicated on a majority of nodes, durable,
    /// messages persistent. Every delivery after the first carries `x-delivery-count`
    /// (``RabbitMQDelivery/deliveryCount``).
    ///
    /// - Parameters:
    ///   - deliveryLimit: `x-delivery-limit`: how many returns a message survives before it is
    ///     dead-lettered, or dropped without a dead-letter exchange. Nil: the broker's default,
    ///     none on RabbitMQ 3.x and 20 from 4.0 (``DeliveryLimit/unlimited`` turns it off there).
    ///   - initialGroupSize: `x-quorum-initial-group-size`: how many nodes hold a replica
    ///     (at least 1). Nil: the broker's default.
    public static func quorum(deliveryLimit: DeliveryLimit? = nil, initialGroupSize: Int? = nil) -> RabbitMQQueueType {
        RabbitMQQueueType(.quorum(deliveryLimit: deliveryLimit, initialGroupSize: initialGroupSize))
    }

    /// A stream with the broker's defaults: kept forever, 500 MB segments.
    public static let stream = RabbitMQQueueType(.stream(maxLengthBytes: nil, maxSegmentSizeBytes: nil, maxAge: nil))

    /// A stream (`x-queue-type: stream`): an append-only, replicated log. Consuming does not
    /// remove messages; each consumer reads from an offset
    /// (``RabbitMQChannel/consume(stream:offset:prefetch:consumerTag:arguments:)``).
    /// Retention removes whole segments, oldest first, once the stream is over a limit.
    ///
    /// - Parameters:
    ///   - maxLengthBytes: `x-max-length-bytes`: the size the stream is trimmed to (at least 1).
    ///     Nil: no size limit.
    ///   - maxSegmentSizeBytes: `x-stream-max-segment-size-bytes`: the size of one segment
    ///     file, the unit of retention (1 byte to 3 GB). Nil: the broker's 500 MB.
    ///   - maxAge: `x-max-age`: messages older than this are removed with their segment, in
    ///     whole seconds (at least 1). Nil: no age limit.
    public static func stream(
        maxLengthBytes: Int64? = nil, maxSegmentSizeBytes: Int64? = nil, maxAge: Duration? = nil
    ) -> RabbitMQQueueType {
        RabbitMQQueueType(.stream(maxLengthBytes: maxLengthBytes, maxSegmentSizeBytes: maxSegmentSizeBytes, maxAge: maxAge))
    }

    /// The `x-queue-type` value: `classic`, `quorum` or `stream`.
    public var name: String {
        switch kind {
        case .classic: "classic"
        case .quorum: "quorum"
        case .stream: "stream"
        }
    }

    public var description: String { name }

    /// RabbitMQ's largest stream segment.
    static let maxSegmentSizeBytes: Int64 = 3_000_000_000

    /// The arguments of a declaration of a queue of this type: `arguments` with the type's
    /// own added. Refuses what the broker would refuse for the type, and an argument given
    /// both here and in `arguments` with different values, so a typo cannot win silently.
    ///
    /// - Throws: ``RabbitMQError`` with code ``RabbitMQError/Code-swift.struct/invalidConfiguration``.
    public func declarationArguments(
        durable: Bool, exclusive: Bool, autoDelete: Bool, arguments: RabbitMQFieldTable = [:]
    ) throws(RabbitMQError) -> RabbitMQFieldTable {
        try declarationArguments(
            durable: durable, exclusive: exclusive, autoDelete: autoDelete, arguments: arguments, brokerVersion: nil)
    }

    /// Whether a broker of this `version` (its `version` server property) takes
    /// `x-delivery-limit: -1` for no limit: RabbitMQ 4.0 and later. 3.x drops a message at
    /// its first return under that limit. An unknown version is taken as a current one.
    static func understandsUnlimitedDeliveryLimit(brokerVersion version: String?) -> Bool {
        guard let version, let major = Int(version.prefix { $0 != "." }) else { return true }
        return major >= 4
    }

    /// ``declarationArguments(durable:exclusive:autoDelete:arguments:)`` for a broker of
    /// `brokerVersion`: an unlimited delivery limit is left out for RabbitMQ 3.x.
    func declarationArguments(
        durable: Bool, exclusive: Bool, autoDelete: Bool, arguments: RabbitMQFieldTable, brokerVersion: String?
    ) throws(RabbitMQError) -> RabbitMQFieldTable {
        var own: RabbitMQFieldTable = ["x-queue-type": .string(name)]
        switch kind {
        case .classic:
            break
        case .quorum(let deliveryLimit, let initialGroupSize):
            try checkReplicated(durable: durable, exclusive: exclusive, autoDelete: autoDelete)
            if let deliveryLimit {
                guard deliveryLimit.value >= -1 else {
                    throw .invalidConfiguration("a quorum queue's delivery limit must not be negative (use .unlimited)")
                }
                if deliveryLimit != .unlimited || Self.understandsUnlimitedDeliveryLimit(brokerVersion: brokerVersion) {
                    own["x-delivery-limit"] = .int64(deliveryLimit.value)
                }
            }
            if let initialGroupSize {
                guard initialGroupSize >= 1 else {
                    throw .invalidConfiguration("a quorum queue's initial group size must be at least 1, not \(initialGroupSize)")
                }
                own["x-quorum-initial-group-size"] = .int64(Int64(initialGroupSize))
            }
        case .stream(let maxLengthBytes, let maxSegmentSizeBytes, let maxAge):
            try checkReplicated(durable: durable, exclusive: exclusive, autoDelete: autoDelete)
            if let maxLengthBytes {
                guard maxLengthBytes >= 1 else {
                    throw .invalidConfiguration("a stream's maximum length must be at least 1 byte, not \(maxLengthBytes)")
                }
                own["x-max-length-bytes"] = .int64(maxLengthBytes)
            }
            if let maxSegmentSizeBytes {
                guard (1...Self.maxSegmentSizeBytes).contains(maxSegmentSizeBytes) else {
                    throw .invalidConfiguration(
                        "a stream's segment size must be 1 byte to 3 GB (3000000000 bytes), not \(maxSegmentSizeBytes)")
                }
                own["x-stream-max-segment-size-bytes"] = .int64(maxSegmentSizeBytes)
            }
            if let maxAge {
                let (seconds, attoseconds) = maxAge.components
                guard seconds >= 1, attoseconds == 0 else {
                    throw .invalidConfiguration("a stream's maximum age must be whole seconds, at least 1, not \(maxAge)")
                }
                own["x-max-age"] = .string("\(seconds)s")
            }
        }
        var result = arguments
        for entry in own {
            // The same number in another integer width (an explicit `.int32(5)`) agrees.
            if let given = arguments[entry.key], given != entry.value,
                given.int64Value == nil || given.int64Value != entry.value.int64Value
            {
                throw .invalidConfiguration(
                    "the arguments set \(entry.key) to \(given), but the queue type \(name) sets it to \(entry.value)")
            }
            result[entry.key] = entry.value
        }
        return result
    }

    private func checkReplicated(durable: Bool, exclusive: Bool, autoDelete: Bool) throws(RabbitMQError) {
        let what = name == "stream" ? "a stream" : "a quorum queue"
        guard durable else { throw .invalidConfiguration("\(what) is always durable: declare it with durable: true") }
        guard !exclusive else { throw .invalidConfiguration("\(what) cannot be exclusive") }
        guard !autoDelete else { throw .invalidConfiguration("\(what) cannot be auto-delete") }
    }
}
