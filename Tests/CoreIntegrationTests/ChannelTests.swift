import RabbitMQTestSupport
import Testing

@testable import RabbitMQ

/// The limit guards against a hang only: under ThreadSanitizer on CI's loaded 2-core machine
/// the 1,600 confirmed round trips of `manyTasksShareOneChannel` took over 2 minutes.
@Suite("Channels, topology and errors", .timeLimit(.minutes(5)))
struct ChannelTests {
    /// A server-named queue declared with the defaults is exclusive (as in the Java and .NET
    /// clients): RabbitMQ 4.3 refuses one that is neither durable nor exclusive. Defect: it
    /// was a transient, shared queue, which such a broker answers by closing the connection.
    @Test func aServerNamedQueueIsExclusiveByDefault() async throws {
        let owner = try await TestBroker.connect()
        let queue = try await owner.openChannel().queueDeclare()
        let other = try await TestBroker.connect()
        let error = await #expect(throws: RabbitMQError.self) {
            try await other.openChannel().queueDeclare(queue.name, passive: true)
        }
        #expect(error?.code == .resourceLocked, "another connection cannot use it: \(String(describing: error))")
        try await other.close()
        try await owner.close()
    }

    @Test func preconditionFailedOnOneChannelLeavesTheOthersWorking() async throws {
        let connection = try await TestBroker.connect()
        let first = try await connection.openChannel()
        let second = try await connection.openChannel()
        let name = TestBroker.uniqueName("redeclare")
        try await first.queueDeclare(name, durable: true, arguments: ["x-message-ttl": 60_000])

        let error = await #expect(throws: RabbitMQError.self) {
            try await first.queueDeclare(name, durable: true, arguments: ["x-message-ttl": 1_000])
        }
        #expect(error?.code == .preconditionFailed)
        #expect(error?.replyCode == 406)
        #expect(error?.scope == .channel)
        #expect(error?.replyText?.contains("x-message-ttl") == true)
        #expect(error?.classID == 50 && error?.methodID == 10, "queue.declare")
        #expect(!first.isOpen)
        #expect(first.closeReason?.code == .preconditionFailed)
        // Later calls on the closed channel fail with the same reason, without a round trip.
        let again = await #expect(throws: RabbitMQError.self) { try await first.queuePurge(name) }
        #expect(again?.code == .preconditionFailed)

        // The connection and its other channel are unaffected.
        #expect(connection.isOpen)
        #expect(second.isOpen)
        try await second.publish("still working", routingKey: name)
        let delivery = try #require(try await second.get(queue: name, autoAck: true))
        #expect(delivery.bodyString == "still working")
        // And the closed channel's number is reused by the next channel.
        let third = try await connection.openChannel()
        #expect(third.number == first.number)
        try await third.queueDelete(name)
        try await connection.close()
    }

    @Test func missingQueueIsATypedNotFound() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let error = await #expect(throws: RabbitMQError.self) {
            try await channel.queueDeclare(TestBroker.uniqueName("missing"), passive: true)
        }
        #expect(error?.code == .notFound)
        #expect(error?.scope == .channel)
        let consumeError = await #expect(throws: RabbitMQError.self) {
            try await connection.openChannel().consume(queue: TestBroker.uniqueName("missing"))
        }
        #expect(consumeError?.code == .notFound)
        #expect(connection.isOpen)
        try await connection.close()
    }

    @Test func publishToAMissingExchangeClosesOnlyThatChannel() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        try await channel.confirmSelect()
        let error = await #expect(throws: RabbitMQError.self) {
            try await channel.publishAndWaitForConfirm(Array("x".utf8), exchange: TestBroker.uniqueName("nope"), routingKey: "k")
        }
        #expect(error?.code == .notFound)
        #expect(error?.scope == .channel)
        let other = try await connection.openChannel()
        try await other.exchangeDeclare("amq.direct", type: .direct, passive: true)
        try await connection.close()
    }

    @Test(arguments: [RabbitMQExchangeType.direct, .topic, .fanout, .headers])
    func exchangeLifecycle(type: RabbitMQExchangeType) async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let source = TestBroker.uniqueName("src-\(type)")
        let destination = TestBroker.uniqueName("dst")
        try await channel.exchangeDeclare(source, type: type, durable: true)
        try await channel.exchangeDeclare(destination, type: .fanout, autoDelete: true)
        try await channel.exchangeDeclare(source, type: type, passive: true)
        try await channel.exchangeBind(destination: destination, source: source, routingKey: "a.b", arguments: ["x-match": "any", "a": 1])
        let queue = try await channel.queueDeclare("", exclusive: true)
        #expect(queue.name.hasPrefix("amq.gen-"))
        try await channel.queueBind(queue: queue.name, exchange: destination)

        let headers: RabbitMQFieldTable = ["a": 1]
        try await channel.publish("routed", exchange: source, routingKey: "a.b", properties: .init(headers: headers))
        let delivery = try #require(try await firstMessage(channel, queue.name))
        #expect(delivery.bodyString == "routed")
        #expect(delivery.exchange == source)

        try await channel.exchangeUnbind(destination: destination, source: source, routingKey: "a.b", arguments: ["x-match": "any", "a": 1])
        try await channel.exchangeDelete(source)
        let error = await #expect(throws: RabbitMQError.self) {
            try await channel.exchangeDeclare(source, type: type, passive: true)
        }
        #expect(error?.code == .notFound)
        try await connection.close()
    }

    @Test func internalExchangesRefuseDirectPublishes() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let name = TestBroker.uniqueName("internal")
        try await channel.exchangeDeclare(name, type: .topic, autoDelete: true, internal: true)
        try await channel.confirmSelect()
        let error = await #expect(throws: RabbitMQError.self) {
            try await channel.publishAndWaitForConfirm(Array("x".utf8), exchange: name, routingKey: "k")
        }
        #expect(error?.code == .accessRefused)
        try await connection.close()
    }

    @Test func queueArgumentsPurgeUnbindAndDelete() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let name = TestBroker.uniqueName("args")
        let queue = try await channel.queueDeclare(
            name, durable: true,
            arguments: [
                "x-max-length": 3, "x-overflow": "drop-head", "x-message-ttl": 600_000,
                "x-dead-letter-exchange": "amq.fanout", "x-dead-letter-routing-key": "dead",
            ])
        #expect(queue.name == name)
        try await channel.queueBind(queue: name, exchange: "amq.direct", routingKey: "args")
        try await channel.confirmSelect()
        for index in 0..<5 {
            try await channel.publishAndWaitForConfirm(Array("\(index)".utf8), exchange: "amq.direct", routingKey: "args")
        }
        #expect(try await channel.queueDeclare(name, passive: true).messageCount == 3, "x-max-length with drop-head")
        try await channel.queueUnbind(queue: name, exchange: "amq.direct", routingKey: "args")
        let unroutable = try await channel.publishAndWaitForConfirm(Array("x".utf8), exchange: "amq.direct", routingKey: "args", mandatory: true)
        guard case .returned = unroutable else {
            Issue.record("unbound publish was \(unroutable)")
            return
        }
        #expect(try await channel.queuePurge(name) == 3)
        #expect(try await channel.queueDelete(name) == 0)
        try await connection.close()
    }

    @Test func quorumQueuesCanBeDeclared() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let name = TestBroker.uniqueName("quorum")
        try await channel.queueDeclare(name, durable: true, arguments: ["x-queue-type": "quorum"])
        try await channel.confirmSelect()
        #expect(try await channel.publishAndWaitForConfirm(Array("q".utf8), routingKey: name) == .acked)
        let delivery = try #require(try await channel.get(queue: name))
        #expect(delivery.bodyString == "q")
        try delivery.ack()
        try await channel.queueDelete(name)
        try await connection.close()
    }

    @Test func mandatoryUnroutablePublishIsReturnedToItsPublisher() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let returns = channel.returnedMessages()
        try await channel.confirmSelect()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let key = TestBroker.uniqueName("unbound")

        // Routed and unroutable publishes interleaved: each gets its own outcome.
        let routed = try await channel.publishWithConfirm(Array("ok".utf8), routingKey: queue.name, mandatory: true)
        let lost = try await channel.publishWithConfirm(
            Array("lost".utf8), exchange: "amq.direct", routingKey: key, properties: .init(messageID: "m-lost"),
            mandatory: true)
        let routed2 = try await channel.publishWithConfirm(Array("ok2".utf8), routingKey: queue.name, mandatory: true)
        #expect(try await routed.outcome() == .acked)
        #expect(try await routed2.outcome() == .acked)
        guard case .returned(let message) = try await lost.outcome() else {
            Issue.record("the unroutable publish was not returned")
            return
        }
        #expect(message.replyCode == 312)
        #expect(message.replyText == "NO_ROUTE")
        #expect(message.exchange == "amq.direct")
        #expect(message.routingKey == key)
        #expect(message.body == Array("lost".utf8))
        #expect(message.properties.messageID == "m-lost")

        // The same return reaches the channel's return stream.
        var iterator = returns.makeAsyncIterator()
        #expect(await iterator.next()?.routingKey == key)

        // Without confirm mode a return only reaches the stream.
        let plain = try await connection.openChannel()
        let plainReturns = plain.returnedMessages()
        try await plain.publish("gone", exchange: "amq.direct", routingKey: key, mandatory: true)
        var plainIterator = plainReturns.makeAsyncIterator()
        #expect(await plainIterator.next()?.body == Array("gone".utf8))
        try await connection.close()
    }

    @Test func rejectPublishOverflowIsNacked() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(
            "", exclusive: true, arguments: ["x-max-length": 1, "x-overflow": "reject-publish"])
        try await channel.confirmSelect()
        #expect(try await channel.publishAndWaitForConfirm(Array("1".utf8), routingKey: queue.name) == .acked)
        #expect(try await channel.publishAndWaitForConfirm(Array("2".utf8), routingKey: queue.name) == .nacked)
        try await connection.close()
    }

    @Test func confirmWindowBoundsOutstandingPublishes() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let window = 8
        try await channel.confirmSelect(maxOutstanding: window)
        // Every publish below holds its confirmation unawaited; the window alone must keep
        // the number in flight at or below `window`, resuming publishers as acks arrive.
        var confirmations: [RabbitMQConfirmation] = []
        for index in 0..<500 {
            confirmations.append(try await channel.publishWithConfirm(Array("\(index)".utf8), routingKey: queue.name))
            #expect(channel.shared.outstandingConfirms <= window)
        }
        #expect(confirmations.count == 500)
        for confirmation in confirmations { #expect(try await confirmation.outcome() == .acked) }
        #expect(try await channel.queueDeclare(queue.name, passive: true).messageCount == 500)
        try await connection.close()
    }

    @Test func publishWithConfirmNeedsConfirmModeAndSendsNothingWithout() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let error = await #expect(throws: RabbitMQError.self) {
            try await channel.publishWithConfirm(Array("x".utf8), routingKey: queue.name)
        }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("confirmSelect") == true)
        // A plain publish afterwards is the only message: the refused one never left.
        try await channel.publish("y", routingKey: queue.name)
        let first = try #require(try await channel.get(queue: queue.name, autoAck: true))
        #expect(first.bodyString == "y")
        #expect(try await channel.queueDeclare(queue.name, passive: true).messageCount == 0)
        try await connection.close()
    }

    @Test func manyTasksShareOneChannel() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.confirmSelect(maxOutstanding: 64)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<16 {
                group.addTask {
                    for index in 0..<100 {
                        let outcome = try await channel.publishAndWaitForConfirm(Array("\(task)-\(index)".utf8), routingKey: queue.name)
                        #expect(outcome == .acked)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await channel.queueDeclare(queue.name, passive: true).messageCount == 1600)
        try await connection.close()
    }

    private func firstMessage(_ channel: RabbitMQChannel, _ queue: String) async throws -> RabbitMQDelivery? {
        let consumer = try await channel.consume(queue: queue, autoAck: true)
        var iterator = consumer.makeAsyncIterator()
        let delivery = try await iterator.next()
        try await consumer.cancel()
        return delivery
    }
}
