/// Where a stream consumer starts reading: the `x-stream-offset` consumer argument.
///
/// ```swift
/// let consumer = try await channel.consume(stream: "events", offset: .offset(5_000), prefetch: 100)
/// ```
public struct RabbitMQStreamOffset: Sendable, Hashable, CustomStringConvertible {
    enum Kind: Sendable, Hashable {
        case first, last, next
        case offset(UInt64)
        case timestamp(UInt64)
    }

    let kind: Kind

    private init(_ kind: Kind) { self.kind = kind }

    /// The oldest message the stream still holds.
    public static let first = RabbitMQStreamOffset(.first)
    /// The start of the last chunk the broker wrote: the last message and possibly a few
    /// before it (a chunk is a batch of messages written together).
    public static let last = RabbitMQStreamOffset(.last)
    /// Only messages published after the consumer starts: the broker's default.
    public static let next = RabbitMQStreamOffset(.next)

    /// The message at `offset` (0 is the first message ever written) and everything after
    /// it; an offset already removed by retention starts at the oldest message held.
    /// At most `Int64.max`.
    public static func offset(_ offset: UInt64) -> RabbitMQStreamOffset { RabbitMQStreamOffset(.offset(offset)) }

    /// Messages from the first chunk written at or after this time, in seconds since
    /// 1970-01-01 UTC (sent as an AMQP timestamp). The broker compares chunk times, so a
    /// few earlier messages of the same chunk may come too.
    public static func timestamp(secondsSince1970 seconds: UInt64) -> RabbitMQStreamOffset {
        RabbitMQStreamOffset(.timestamp(seconds))
    }

    /// The `x-stream-offset` value: the strings `first`, `last`, `next`, a long integer
    /// (`l`) for an offset, an AMQP timestamp (`T`) for a time.
    public var argument: RabbitMQFieldValue {
        switch kind {
        case .first: "first"
        case .last: "last"
        case .next: "next"
        case .offset(let offset): .int64(Int64(clamping: offset))
        case .timestamp(let seconds): .timestamp(seconds)
        }
    }

    public var description: String {
        switch kind {
        case .first: "first"
        case .last: "last"
        case .next: "next"
        case .offset(let offset): "offset \(offset)"
        case .timestamp(let seconds): "timestamp \(seconds)"
        }
    }
}

/// What RabbitMQ requires of a stream consumer, checked before anything is sent: manual
/// acknowledgements, and a per-consumer prefetch (the broker closes the channel without it).
/// Pure, unit-tested without a broker.
enum StreamConsumeCheck {
    static let offsetArgument = "x-stream-offset"

    /// For ``RabbitMQChannel/consume(stream:offset:prefetch:consumerTag:arguments:)``: the
    /// consumer arguments with the offset added.
    static func arguments(
        offset: RabbitMQStreamOffset, prefetch: UInt16, arguments: RabbitMQFieldTable
    ) throws(RabbitMQError) -> RabbitMQFieldTable {
        guard prefetch > 0 else {
            throw .invalidConfiguration("a stream consumer needs a prefetch count of at least 1 (0 means no limit, which RabbitMQ refuses for streams)")
        }
        if case .offset(let value) = offset.kind, value > UInt64(Int64.max) {
            throw .invalidConfiguration("a stream offset is at most \(Int64.max), not \(value)")
        }
        guard arguments[offsetArgument] == nil else {
            throw .invalidConfiguration("give the stream offset as the offset parameter, not in the arguments")
        }
        var result = arguments
        result[offsetArgument] = offset.argument
        return result
    }

    /// For ``RabbitMQChannel/consume(queue:consumerTag:autoAck:exclusive:arguments:)``: a
    /// consumer that names a stream offset is a stream consumer, so it must not auto-ack and
    /// the channel must have a per-consumer prefetch (`perConsumerPrefetch`, 0 when none).
    static func check(arguments: RabbitMQFieldTable, noAck: Bool, perConsumerPrefetch: UInt16) throws(RabbitMQError) {
        guard arguments[offsetArgument] != nil else { return }
        guard !noAck else {
            throw .invalidConfiguration("a stream consumer must acknowledge its deliveries: RabbitMQ refuses auto-ack on streams")
        }
        guard perConsumerPrefetch > 0 else {
            throw .invalidConfiguration(
                "a stream consumer needs a prefetch count: call qos(prefetchCount:) first, or use consume(stream:offset:prefetch:)")
        }
    }
}
