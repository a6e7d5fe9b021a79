import RabbitMQ
import RabbitMQTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Quorum queues and streams against the test broker (RabbitMQ 3.10 and 4.0 alike; where
/// they differ the test says so).
@Suite("Queue types", .timeLimit(.minutes(5)))
struct QueueTypeTests {
    /// The broker's major version, from its server properties.
    static func majorVersion(_ connection: RabbitMQConnection) throws -> Int {
        let version = try #require(connection.serverProperties["version"]?.stringValue)
        return try #require(Int(version.prefix { $0 != "." }))
    }

    /// Takes the next message from `queue` with basic.get, waiting for one to be there.
    static func next(_ queue: String, on channel: RabbitMQChannel) async throws -> RabbitMQDelivery {
        var delivery: RabbitMQDelivery?
        try await eventually("a message in \(queue)") {
            delivery = try await channel.get(queue: queue)
            return delivery != nil
        }
        return delivery!
    }

    // MARK: Declarations

    @Test func aTypedDeclarationRefusesWhatTheBrokerWouldRefuseBeforeSendingIt() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let name = TestBroker.uniqueName("typed")
        for (type, durable, exclusive, autoDelete) in [
            (RabbitMQQueueType.quorum, true, true, false), (.quorum(deliveryLimit: 3), false, false, false),
            (.stream, true, false, true), (.stream(maxAge: .milliseconds(10)), true, false, false),
        ] {
            let error = await #expect(throws: RabbitMQError.self) {
                try await channel.queueDeclare(name, type: type, durable: durable, exclusive: exclusive, autoDelete: autoDelete)
            }
            #expect(error?.code == .invalidConfiguration)
        }
        #expect(channel.isOpen, "nothing was sent")
        #expect(try await TestBroker.queueState(name) == nil)

        try await channel.queueDeclare(name, type: .quorum(deliveryLimit: 3, initialGroupSize: 1))
        try await channel.queueDeclare(name, type: .quorum(deliveryLimit: 3, initialGroupSize: 1))
        let other = try await connection.openChannel()
        let error = await #expect(throws: RabbitMQError.self) { try await other.queueDeclare(name, type: .classic) }
        #expect(error?.code == .preconditionFailed, "the broker refuses another type for an existing queue")
        try await channel.queueDelete(name)

        // .classic names its type; a queue declared without one is classic all the same.
        let classic = TestBroker.uniqueName("classic")
        try await channel.queueDeclare(classic, durable: true)
        try await channel.queueDeclare(classic, type: .classic)
        try await channel.queueDelete(classic)
        try await connection.close()
    }

    // MARK: Quorum queues

    /// A quorum queue of `type` dead-lettering into a classic queue `<queue>.dead`, holding one
    /// confirmed message `body`.
    static func deadLetteringQuorum(
        _ prefix: String, _ type: RabbitMQQueueType, body: String, on channel: RabbitMQChannel
    ) async throws -> (queue: String, dead: String) {
        let queue = TestBroker.uniqueName(prefix)
        let dead = queue + ".dead"
        try await channel.queueDeclare(dead, type: .classic)
        try await channel.queueDeclare(
            queue, type: type, arguments: ["x-dead-letter-exchange": "", "x-dead-letter-routing-key": .string(dead)])
        try await channel.confirmSelect()
        #expect(try await channel.publishAndWaitForConfirm(Array(body.utf8), routingKey: queue) == .acked)
        return (queue, dead)
    }

    @Test func quorumRedeliveriesCountAndTheDeliveryLimitDeadLetters() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let (queue, dead) = try await Self.deadLetteringQuorum("quorum", .quorum(deliveryLimit: 2), body: "poison", on: channel)

        var counts: [Int?] = []
        for _ in 0..<3 {
            let delivery = try await Self.next(queue, on: channel)
            counts.append(delivery.deliveryCount)
            try delivery.nack(requeue: true)
        }
        let parked = try await Self.next(dead, on: channel)
        try parked.ack()
        // A first delivery has no count, or (RabbitMQ 3.10's basic.get) a count of 0.
        #expect(counts.map { $0 ?? 0 } == [0, 1, 2], "a limit of 2: two returns survive, the third dead-letters")
        #expect(counts.dropFirst() == [1, 2])
        #expect(parked.bodyString == "poison")
        let death = try #require(parked.properties.headers?["x-death"])
        #expect("\(death)".contains("delivery_limit"), "\(death)")
        #expect(try await channel.queueDeclare(queue, passive: true).messageCount == 0)

        try await channel.queueDelete(queue)
        try await channel.queueDelete(dead)
        try await connection.close()
    }

    /// RabbitMQ 4.0 gives every quorum queue a delivery limit of 20: a message returned 20
    /// times is dead-lettered (dropped without a dead-letter exchange). 3.x has no default.
    @Test func theDefaultDeliveryLimitIs20From4_0AndNoneBefore() async throws {
        let connection = try await TestBroker.connect()
        let major = try Self.majorVersion(connection)
        let channel = try await connection.openChannel()
        let (queue, dead) = try await Self.deadLetteringQuorum("quorum-default", .quorum, body: "again", on: channel)

        var returns = 0
        while returns < 25, let delivery = try await channel.get(queue: queue) {
            try delivery.nack(requeue: true)
            returns += 1
            // Each nack reaches the broker before the next get (one channel, in order).
        }
        if major >= 4 {
            #expect(returns == 21, "20 returns survive; the 21st dead-letters")
            #expect(try await Self.next(dead, on: channel).bodyString == "again")
        } else {
            #expect(returns == 25)
            #expect(try await channel.queueDeclare(dead, passive: true).messageCount == 0)
        }
        try await channel.queueDelete(queue)
        try await channel.queueDelete(dead)
        try await connection.close()
    }

    /// `.unlimited` turns RabbitMQ 4.0's default limit off (-1), and on 3.x, which would
    /// take -1 as "drop at the first return", is left out (no limit there by default).
    @Test func anUnlimitedDeliveryLimitNeverGivesUp() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = TestBroker.uniqueName("quorum-unlimited")
        try await channel.queueDeclare(queue, type: .quorum(deliveryLimit: .unlimited))
        try await channel.confirmSelect()
        #expect(try await channel.publishAndWaitForConfirm(Array("again".utf8), routingKey: queue) == .acked)
        var returns = 0
        while returns < 25, let delivery = try await channel.get(queue: queue) {
            try delivery.nack(requeue: true)
            returns += 1
        }
        #expect(returns == 25, "past RabbitMQ 4.0's default limit")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// What a consumer that goes away without acknowledging does to the count: RabbitMQ 3.10
    /// and 4.0 count it as a delivery (4.3 stops counting it).
    @Test func aConsumerGoneWithAnUnacknowledgedMessageCountsAsADelivery() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = TestBroker.uniqueName("quorum-gone")
        try await channel.queueDeclare(queue, type: .quorum(deliveryLimit: 5))
        try await channel.confirmSelect()
        #expect(try await channel.publishAndWaitForConfirm(Array("kept".utf8), routingKey: queue) == .acked)

        let consumerChannel = try await connection.openChannel()
        try await consumerChannel.qos(prefetchCount: 1)
        var iterator = try await consumerChannel.consume(queue: queue).makeAsyncIterator()
        let first = try #require(try await iterator.next())
        #expect(first.deliveryCount == nil)
        try await consumerChannel.close()

        let again = try await Self.next(queue, on: channel)
        #expect(again.redelivered)
        #expect(again.deliveryCount == 1)
        try again.ack()
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    // MARK: Streams

    static let streamSize = 10_000

    /// A stream of `streamSize` messages "0" ... "9999", published with confirms.
    static func withStream(_ body: (String, RabbitMQChannel) async throws -> Void) async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let stream = TestBroker.uniqueName("stream")
        try await channel.queueDeclare(
            stream, type: .stream(maxLengthBytes: 100_000_000, maxSegmentSizeBytes: 1_000_000))
        try await channel.confirmSelect()
        var confirmations: [RabbitMQConfirmation] = []
        confirmations.reserveCapacity(streamSize)
        for index in 0..<streamSize {
            confirmations.append(try await channel.publishWithConfirm(Array("\(index)".utf8), routingKey: stream))
        }
        for confirmation in confirmations { #expect(try await confirmation.outcome() == .acked) }
        try await body(stream, channel)
        try await channel.queueDelete(stream)
        try await connection.close()
    }

    /// Reads `stream` from `offset` until a delivery `isLast`, acknowledging each; the
    /// bodies and offsets, in order.
    static func read(
        _ stream: String, from offset: RabbitMQStreamOffset, on connection: RabbitMQConnection,
        until isLast: (RabbitMQDelivery) -> Bool
    ) async throws -> [(body: String, offset: UInt64?)] {
        let channel = try await connection.openChannel()
        let consumer = try await channel.consume(stream: stream, offset: offset, prefetch: 500)
        var seen: [(body: String, offset: UInt64?)] = []
        for try await delivery in consumer {
            seen.append((delivery.bodyString, delivery.streamOffset))
            try delivery.ack()
            if isLast(delivery) { break }
        }
        try await consumer.cancel()
        try await channel.close()
        return seen
    }

    @Test func tenThousandMessagesReadBackFromAnOffsetInOrder() async throws {
        try await Self.withStream { stream, channel in
            let start = 3_217
            let seen = try await Self.read(stream, from: .offset(UInt64(start)), on: channel.connection) {
                $0.bodyString == "end"
            } publishingAfterwards: {
                // Nothing but the sentinel may follow the last message.
                try await channel.publishAndWaitForConfirm(Array("end".utf8), routingKey: stream)
            }
            let expected = (start..<Self.streamSize).map(String.init) + ["end"]
            #expect(seen.count == expected.count)
            #expect(seen.map(\.body) == expected)
            #expect(seen.map(\.offset) == (start...Self.streamSize).map { UInt64($0) }, "offsets count from 0")
        }
    }

    @Test func firstLastNextAndATimestampStartWhereTheySay() async throws {
        try await Self.withStream { stream, channel in
            let connection = channel.connection
            let last = String(Self.streamSize - 1)
            let first = try await Self.read(stream, from: .first, on: connection) { $0.bodyString == last }
            #expect(first.map(\.body) == (0..<Self.streamSize).map(String.init))

            // The start of the last chunk: the last message and maybe some before it, in order.
            let tail = try await Self.read(stream, from: .last, on: connection) { $0.bodyString == last }
            let tailFirst = try #require(tail.first)
            let tailStart = try #require(Int(tailFirst.body))
            #expect(tail.map(\.body) == (tailStart..<Self.streamSize).map(String.init))

            // A time before everything reads everything.
            let epoch = try await Self.read(stream, from: .timestamp(secondsSince1970: 0), on: connection) {
                $0.bodyString == last
            }
            #expect(epoch.count == Self.streamSize)

            // A time after everything, like .next: only what comes later. Wait for the clock
            // to turn a second, so the message published then lies in a later chunk.
            let now = UInt64(time(nil))
            try await eventually("the clock to pass \(now)") { UInt64(time(nil)) > now }
            let after = try await Self.read(stream, from: .timestamp(secondsSince1970: now + 1), on: connection) {
                $0.bodyString.hasPrefix("later")
            } publishingAfterwards: {
                try await channel.publishAndWaitForConfirm(Array("later-1".utf8), routingKey: stream)
            }
            #expect(after.map(\.body) == ["later-1"])
            #expect(after.first?.offset == UInt64(Self.streamSize))

            let next = try await Self.read(stream, from: .next, on: connection) {
                $0.bodyString.hasPrefix("later")
            } publishingAfterwards: {
                try await channel.publishAndWaitForConfirm(Array("later-2".utf8), routingKey: stream)
            }
            #expect(next.map(\.body) == ["later-2"])
        }
    }

    /// After a recovery a stream consumer goes on after the last message it handed out:
    /// neither from its first offset again nor skipping what it had received but not handed
    /// out (those deliveries of the lost connection are dropped).
    @Test func aRecoveredStreamConsumerGoesOnWhereItStopped() async throws {
        let publisher = try await TestBroker.connect()
        let channel = try await publisher.openChannel()
        let stream = TestBroker.uniqueName("stream-recovered")
        try await channel.queueDeclare(stream, type: .stream)
        try await channel.confirmSelect()
        var confirmations: [RabbitMQConfirmation] = []
        for index in 0..<1_000 {
            confirmations.append(try await channel.publishWithConfirm(Array("\(index)".utf8), routingKey: stream))
        }
        for confirmation in confirmations { #expect(try await confirmation.outcome() == .acked) }

        let name = TestBroker.uniqueName("stream-reader")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let consumer = try await connection.openChannel().consume(stream: stream, offset: .first, prefetch: 50)
        var iterator = consumer.makeAsyncIterator()
        var seen: [String] = []
        while seen.count < 300, let delivery = try await iterator.next() {
            seen.append(delivery.bodyString)
            try delivery.ack()
        }
        try await TestBroker.closeConnection(named: name, reason: "stream recovery test")
        try await log.recovered()
        while seen.last != "999", let delivery = try await iterator.next() {
            seen.append(delivery.bodyString)
            // A settlement of a delivery of the lost connection is dropped, not an error.
            try delivery.ack()
        }
        #expect(seen.count == 1_000)
        #expect(seen == (0..<1_000).map(String.init), "in order, none twice, none skipped")
        try await consumer.cancel()
        try await connection.close()
        try await channel.queueDelete(stream)
        try await publisher.close()
    }

    @Test func streamConsumersWithoutPrefetchOrWithAutoAckAreRefusedBeforeSending() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let stream = TestBroker.uniqueName("stream-refused")
        try await channel.queueDeclare(stream, type: .stream)

        let noPrefetch = await #expect(throws: RabbitMQError.self) {
            _ = try await channel.consume(stream: stream, offset: .first, prefetch: 0)
        }
        #expect(noPrefetch?.code == .invalidConfiguration)
        let autoAck = await #expect(throws: RabbitMQError.self) {
            _ = try await channel.consume(queue: stream, autoAck: true, arguments: ["x-stream-offset": "first"])
        }
        #expect(autoAck?.code == .invalidConfiguration)
        let untuned = await #expect(throws: RabbitMQError.self) {
            _ = try await channel.consume(queue: stream, arguments: ["x-stream-offset": "first"])
        }
        #expect(untuned?.code == .invalidConfiguration)
        #expect(channel.isOpen, "nothing was sent")

        // With a prefetch, the general consume works too.
        try await channel.qos(prefetchCount: 10)
        let consumer = try await channel.consume(queue: stream, arguments: ["x-stream-offset": .timestamp(0)])
        try await consumer.cancel()
        try await channel.queueDelete(stream)
        try await connection.close()
    }
}

extension QueueTypeTests {
    /// ``read(_:from:on:until:)`` that publishes with `publish` once the consumer is registered.
    static func read(
        _ stream: String, from offset: RabbitMQStreamOffset, on connection: RabbitMQConnection,
        until isLast: (RabbitMQDelivery) -> Bool, publishingAfterwards publish: () async throws -> Void
    ) async throws -> [(body: String, offset: UInt64?)] {
        let channel = try await connection.openChannel()
        let consumer = try await channel.consume(stream: stream, offset: offset, prefetch: 500)
        try await publish()
        var seen: [(body: String, offset: UInt64?)] = []
        for try await delivery in consumer {
            seen.append((delivery.bodyString, delivery.streamOffset))
            try delivery.ack()
            if isLast(delivery) { break }
        }
        try await consumer.cancel()
        try await channel.close()
        return seen
    }
}
