import RabbitMQ
import RabbitMQTestSupport
import Synchronization
import Testing

@Suite("Publish and consume", .timeLimit(.minutes(5)))
struct PublishConsumeTests {
    /// Deterministic body for message `index`: sizes 0 B, 1 B and 200 KiB (larger than
    /// frame_max, so split across body frames) among small ones.
    static func body(_ index: Int) -> [UInt8] {
        let size: Int
        switch index % 50 {
        case 0: size = 200 * 1024
        case 1, 17: size = 0
        case 2, 33: size = 1
        default: size = 16 + index % 64
        }
        return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
    }

    @Test func aLoopThatEndsEarlyLeavesTheRestForTheNextIteratorAndDroppingTheConsumerCancelsIt() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("resume"), durable: true)
        try await channel.confirmSelect()
        for index in 0..<5 {
            try await channel.publishAndWaitForConfirm(Array("\(index)".utf8), routingKey: queue.name)
        }
        let consumerChannel = try await connection.openChannel()
        var consumer: RabbitMQConsumer? = try await consumerChannel.consume(queue: queue.name)
        // Let all five arrive, so the first iterator takes them in one batch.
        try await eventually("five deliveries to be unacknowledged") {
            try await channel.queueDeclare(queue.name, passive: true).messageCount == 0
        }
        var seen: [String] = []
        for try await delivery in consumer! {
            seen.append(delivery.bodyString)
            try delivery.ack()
            break
        }
        for try await delivery in consumer! {
            seen.append(delivery.bodyString)
            try delivery.ack()
            if seen.count == 3 { break }
        }
        #expect(seen == ["0", "1", "2"], "a new iterator goes on where the last one stopped")
        #expect(try await channel.queueDeclare(queue.name, passive: true).consumerCount == 1, "still consuming")
        consumer = nil
        // The two deliveries it never handed out go back to the queue, and the consumer goes.
        try await eventually("the consumer to be cancelled and its deliveries requeued") {
            let state = try await channel.queueDeclare(queue.name, passive: true)
            return state.consumerCount == 0 && state.messageCount == 2
        }
        #expect(try await channel.get(queue: queue.name, autoAck: true)?.bodyString == "3")
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func smallFramesCarryHugeBodiesAndRefuseOversizedHeaders() async throws {
        // frame_max 8192 (the smallest RabbitMQ 4.1 accepts): a 5 MiB body takes 641 body
        // frames (more than one scatter/gather write can carry), and a 10 KB headers table
        // cannot fit in a content header frame.
        var configuration = try TestBroker.configuration()
        configuration.frameMax = 8192
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("frames"), exclusive: true)
        try await channel.confirmSelect()

        let oversized = RabbitMQProperties(headers: ["blob": .string(String(repeating: "x", count: 10_000))])
        let error = await #expect(throws: RabbitMQError.self) {
            try await channel.publishAndWaitForConfirm([1], routingKey: queue.name, properties: oversized)
        }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("8192") == true)
        #expect(channel.isOpen, "only that publish failed")

        let bodies: [[UInt8]] = [
            (0..<(5 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) },
            Array(repeating: 42, count: 8_000),  // copied into the batch, two body frames
            (0..<100_000).map { UInt8(truncatingIfNeeded: $0) },
        ]
        let fits = RabbitMQProperties(headers: ["blob": .string(String(repeating: "y", count: 6_000))])
        for body in bodies {
            #expect(try await channel.publishAndWaitForConfirm(body, routingKey: queue.name, properties: fits) == .acked)
        }
        // A content header that fills its frame to the last byte, with properties encoded
        // before the headers table as well as after it: 22 bytes of frame and fixed fields,
        // 31 of content type, encoding and app id, and a table of 14 + n bytes.
        func edge(_ n: Int) -> RabbitMQProperties {
            RabbitMQProperties(
                contentType: "application/json", contentEncoding: "identity",
                headers: ["blob": .string(String(repeating: "z", count: n))], appID: "edge")
        }
        let exact = edge(8192 - 22 - 31 - 14)
        #expect(try await channel.publishAndWaitForConfirm([7], routingKey: queue.name, properties: exact) == .acked)
        let oneByteMore = await #expect(throws: RabbitMQError.self) {
            try await channel.publishAndWaitForConfirm([8], routingKey: queue.name, properties: edge(8192 - 22 - 31 - 13))
        }
        #expect(oneByteMore?.code == .invalidConfiguration, "the exact one was at the edge")
        let consumer = try await channel.consume(queue: queue.name, autoAck: true)
        var received: [[UInt8]] = []
        var iterator = consumer.makeAsyncIterator()
        while received.count < bodies.count, let delivery = try await iterator.next() {
            #expect(delivery.properties == fits)
            received.append(delivery.body)
        }
        #expect(received == bodies, "every body intact and in order")
        let atTheEdge = try #require(try await iterator.next())
        #expect(atTheEdge.properties == exact)
        #expect(atTheEdge.body == [7])
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func tenThousandConfirmedMessagesArriveExactlyOnceInOrderIntact() async throws {
        let count = 10_000
        let connection = try await TestBroker.connect()
        let publisher = try await connection.openChannel()
        let queue = try await publisher.queueDeclare(TestBroker.uniqueName("bulk"), durable: true)
        try await publisher.confirmSelect(maxOutstanding: 500)

        let consumerChannel = try await connection.openChannel()
        try await consumerChannel.qos(prefetchCount: 200)
        let consumer = try await consumerChannel.consume(queue: queue.name)

        let publishing = Task {
            var confirmations: [RabbitMQConfirmation] = []
            confirmations.reserveCapacity(count)
            for index in 0..<count {
                let properties = RabbitMQProperties(
                    headers: ["index": .int64(Int64(index))], deliveryMode: .persistent, messageID: "\(index)")
                confirmations.append(
                    try await publisher.publishWithConfirm(Self.body(index), routingKey: queue.name, properties: properties))
            }
            var acked = 0
            for confirmation in confirmations where try await confirmation.outcome() == .acked { acked += 1 }
            return acked
        }

        var expected = 0
        var bigBodies = 0
        for try await delivery in consumer {
            #expect(delivery.properties.messageID == "\(expected)", "in order")
            #expect(delivery.properties.headers?["index"] == .int64(Int64(expected)))
            #expect(delivery.body == Self.body(expected), "body \(expected) intact")
            #expect(!delivery.redelivered)
            if delivery.body.count == 200 * 1024 { bigBodies += 1 }
            try delivery.ack()
            expected += 1
            if expected == count { break }
        }
        #expect(try await publishing.value == count, "every publish confirmed")
        #expect(expected == count)
        #expect(bigBodies == count / 50)
        // Exactly once: nothing left over, nothing unacked.
        try await consumerChannel.close()
        let after = try await publisher.queueDeclare(queue.name, passive: true)
        #expect(after.messageCount == 0)
        try await cleanup(connection, queue: queue.name)
        try await connection.close()
    }

    @Test func twoConsumersOnTwoChannelsWhileAThirdPublishes() async throws {
        let perQueue = 2_000
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        let queueA = try await setup.queueDeclare(TestBroker.uniqueName("two-a"), durable: true, autoDelete: false)
        let queueB = try await setup.queueDeclare(TestBroker.uniqueName("two-b"), durable: true)

        func consume(_ queue: String) async throws -> Task<[Int], any Error> {
            let channel = try await connection.openChannel()
            try await channel.qos(prefetchCount: 50)
            let consumer = try await channel.consume(queue: queue)
            return Task {
                var seen: [Int] = []
                for try await delivery in consumer {
                    seen.append(Int(delivery.bodyString)!)
                    try delivery.ack()
                    if seen.count == perQueue { break }
                }
                return seen
            }
        }
        let a = try await consume(queueA.name)
        let b = try await consume(queueB.name)
        let publisher = try await connection.openChannel()
        #expect(Set([setup.number, publisher.number]).count == 2)
        for index in 0..<perQueue {
            try await publisher.publish("\(index)", routingKey: queueA.name)
            try await publisher.publish("\(index)", routingKey: queueB.name)
        }
        #expect(try await a.value == Array(0..<perQueue))
        #expect(try await b.value == Array(0..<perQueue))
        try await cleanup(connection, queue: queueA.name, queueB.name)
        try await connection.close()
    }

    @Test func prefetchBoundsUnackedDeliveries() async throws {
        let prefetch = 5
        let total = 40
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("prefetch"), durable: true)
        try await channel.confirmSelect()
        for index in 0..<total {
            #expect(try await channel.publishAndWaitForConfirm(Array("\(index)".utf8), routingKey: queue.name) == .acked)
        }
        let consumerChannel = try await connection.openChannel()
        try await consumerChannel.qos(prefetchCount: UInt16(prefetch))
        let consumer = try await consumerChannel.consume(queue: queue.name)
        var iterator = consumer.makeAsyncIterator()
        var held: [RabbitMQDelivery] = []
        for _ in 0..<prefetch { held.append(try #require(try await iterator.next())) }
        // With `prefetch` unacked deliveries out, the broker keeps the rest ready.
        let inspect = try await connection.openChannel()
        #expect(try await inspect.queueDeclare(queue.name, passive: true).messageCount == UInt32(total - prefetch))
        // Each ack lets exactly one more through: the broker never exceeds the window.
        var received = prefetch
        while received < total {
            try held.removeFirst().ack()
            held.append(try #require(try await iterator.next()))
            received += 1
            let ready = try await inspect.queueDeclare(queue.name, passive: true).messageCount
            #expect(ready == UInt32(total - received))
        }
        for delivery in held { try delivery.ack() }
        try await cleanup(connection, queue: queue.name)
        try await connection.close()
    }

    @Test func nackWithRequeueRedeliversMarkedRedelivered() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("nack"), durable: true)
        try await channel.publish("again", routingKey: queue.name)
        let consumer = try await channel.consume(queue: queue.name)
        var iterator = consumer.makeAsyncIterator()
        let first = try #require(try await iterator.next())
        #expect(!first.redelivered)
        try first.nack(requeue: true)
        let second = try #require(try await iterator.next())
        #expect(second.redelivered)
        #expect(second.bodyString == "again")
        try second.reject(requeue: true)
        let third = try #require(try await iterator.next())
        #expect(third.redelivered)
        try third.ack()
        try await cleanup(connection, queue: queue.name)
        try await connection.close()
    }

    @Test func rejectWithoutRequeueDeadLettersThroughADLX() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let dlx = TestBroker.uniqueName("dlx")
        try await channel.exchangeDeclare(dlx, type: .fanout, autoDelete: true)
        let parking = try await channel.queueDeclare(TestBroker.uniqueName("parking"), durable: true)
        try await channel.queueBind(queue: parking.name, exchange: dlx)
        let work = try await channel.queueDeclare(
            TestBroker.uniqueName("work"), durable: true, arguments: ["x-dead-letter-exchange": .string(dlx)])

        try await channel.publish("poison", routingKey: work.name)
        let consumer = try await channel.consume(queue: work.name)
        var iterator = consumer.makeAsyncIterator()
        try #require(try await iterator.next()).reject(requeue: false)

        let parkedConsumer = try await channel.consume(queue: parking.name)
        var parkedIterator = parkedConsumer.makeAsyncIterator()
        let parked = try #require(try await parkedIterator.next())
        #expect(parked.bodyString == "poison")
        guard case .array(let deaths)? = parked.properties.headers?["x-death"], case .table(let death)? = deaths.first
        else {
            Issue.record("no x-death header: \(String(describing: parked.properties.headers))")
            return
        }
        #expect(death["reason"] == .string("rejected"))
        #expect(death["queue"] == .string(work.name))
        try parked.ack()
        try await cleanup(connection, queue: work.name, parking.name)
        try await connection.close()
    }

    @Test func basicGetReturnsMessagesThenNil() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("get"), durable: true)
        try await channel.confirmSelect()
        try await channel.publishAndWaitForConfirm(Array("one".utf8), routingKey: queue.name)
        try await channel.publishAndWaitForConfirm(Array("two".utf8), routingKey: queue.name)
        let first = try #require(try await channel.get(queue: queue.name))
        #expect(first.bodyString == "one")
        #expect(first.messageCount == 1)
        try first.ack()
        let second = try #require(try await channel.get(queue: queue.name, autoAck: true))
        #expect(second.bodyString == "two")
        #expect(throws: RabbitMQError.self) { try second.ack() }
        #expect(try await channel.get(queue: queue.name) == nil)
        try await cleanup(connection, queue: queue.name)
        try await connection.close()
    }

    @Test func everyBasicPropertyArrivesAsSent() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("props"), durable: true)
        let properties = RabbitMQProperties(
            contentType: "application/json", contentEncoding: "identity",
            headers: ["h1": "v", "n": 42, "nested": ["deep": [1, 2.5, true]]], deliveryMode: .persistent, priority: 3,
            correlationID: "corr-1", replyTo: "replies", expiration: "600000", messageID: "msg-1",
            timestamp: 1_700_000_123, type: "order.created", userID: "guest", appID: "swift-tests")
        try await channel.publish("{}", routingKey: queue.name, properties: properties)
        let consumer = try await channel.consume(queue: queue.name, autoAck: true)
        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        #expect(delivery.properties == properties)
        #expect(delivery.exchange == "")
        #expect(delivery.routingKey == queue.name)
        try await cleanup(connection, queue: queue.name)
        try await connection.close()
    }

    @Test func eachDeliveryCarriesItsOwnPropertiesWhenConsecutiveOnesRepeatOrDiffer() async throws {
        // The I/O thread shares decoded properties while consecutive messages repeat them:
        // a change in any one field, an added or a dropped field, must still arrive as sent.
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("props-seq"), durable: true)
        let base = RabbitMQProperties(
            contentType: "application/json", deliveryMode: .persistent, correlationID: "c-0", appID: "seq")
        var sent: [RabbitMQProperties] = [base, base]
        for change in 0..<7 {
            var next = base
            switch change {
            case 0: next.correlationID = "c-1"
            case 1: next.contentType = "application/jsoN"
            case 2: next.deliveryMode = .transient
            case 3: next.appID = nil
            case 4: next.headers = ["k": "v"]
            case 5: next.messageID = "m-1"
            default: next.priority = 9
            }
            sent += [next, next, base]
        }
        sent.append(RabbitMQProperties())
        for (index, properties) in sent.enumerated() {
            try await channel.publish(Array("\(index)".utf8), routingKey: queue.name, properties: properties)
        }
        let consumer = try await channel.consume(queue: queue.name, autoAck: true)
        var received: [RabbitMQProperties] = []
        for try await delivery in consumer {
            #expect(delivery.bodyString == "\(received.count)")
            received.append(delivery.properties)
            if received.count == sent.count { break }
        }
        #expect(received == sent)
        try await cleanup(connection, queue: queue.name)
        try await connection.close()
    }

    @Test func clientCancelEndsTheSequence() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("cancel"), durable: true)
        let consumer = try await channel.consume(queue: queue.name)
        let iteration = Task {
            var count = 0
            for try await delivery in consumer {
                try delivery.ack()
                count += 1
            }
            return count
        }
        try await channel.publish("only", routingKey: queue.name)
        try await eventually("the message to be consumed") {
            try await channel.queueDeclare(queue.name, passive: true).messageCount == 0
        }
        try await consumer.cancel()
        #expect(try await iteration.value == 1)
        #expect(try await channel.queueDeclare(queue.name, passive: true).consumerCount == 0)
        try await cleanup(connection, queue: queue.name)
        try await connection.close()
    }

    @Test func serverCancelEndsTheSequenceWithATypedError() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("deleted"), durable: true)
        let consumer = try await channel.consume(queue: queue.name)
        let iteration = Task {
            for try await _ in consumer {}
        }
        let other = try await TestBroker.connect()
        try await other.openChannel().queueDelete(queue.name)
        let error = await #expect(throws: RabbitMQError.self) { try await iteration.value }
        #expect(error?.code == .consumerCancelled)
        #expect(channel.isOpen, "a server cancel does not close the channel")
        try await other.close()
        try await connection.close()
    }
}

/// Deletes test queues on a fresh channel (the test's own channels may be closed).
func cleanup(_ connection: RabbitMQConnection, queue names: String...) async throws {
    guard connection.isOpen else {
        let other = try await TestBroker.connect()
        let channel = try await other.openChannel()
        for name in names { try await channel.queueDelete(name) }
        try await other.close()
        return
    }
    let channel = try await connection.openChannel()
    for name in names { try await channel.queueDelete(name) }
    try await channel.close()
}
