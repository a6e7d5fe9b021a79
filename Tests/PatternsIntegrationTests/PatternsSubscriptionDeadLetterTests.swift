import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

/// What direct and fanout subscriptions do with deliveries that are not envelopes, with a
/// nameless direct queue, and with a server-named queue across a recovery.
@Suite("Patterns: subscription dead letters", .timeLimit(.minutes(3)))
struct PatternsSubscriptionDeadLetterTests {
    static let garbage = Array("not an envelope".utf8)

    /// The next message of `subscription` (acknowledged), skipping what it skips.
    static func next<P>(_ subscription: RabbitMQSubscription<P>) async throws -> RabbitMQEnvelopeMessage<P> {
        var iterator = subscription.makeAsyncIterator()
        let message = try #require(try await iterator.next())
        try message.ack()
        return message
    }

    /// The first message of `queue`, acknowledged.
    static func first(of queue: String, on channel: RabbitMQChannel) async throws -> RabbitMQDelivery {
        let consumer = try await channel.consume(queue: queue)
        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        try delivery.ack()
        try await consumer.cancel()
        return delivery
    }

    @Test func anUndecodableDeliveryOnADirectQueueIsDeadLetteredAndReported() async throws {
        let connection = try await TestBroker.connect()
        let exchange = try await RabbitMQDirectExchange.declare(TestBroker.uniqueName("dl-direct"), on: connection)
        let queue = TestBroker.uniqueName("dl-direct-q")
        let reported = Recorded<RabbitMQUndecodableDelivery>()
        let subscription = try await exchange.subscribe(
            Shipment.self, queue: queue, bindingKeys: ["eu"], onUndecodable: { reported.append($0) })
        try await exchange.channel.publishAndWaitForConfirm(Self.garbage, exchange: exchange.name, routingKey: "eu")
        try await exchange.publish(PatternsExchangeTests.envelope(1, "eu"), routingKey: "eu")

        #expect(try await Self.next(subscription).data.id == 1, "the garbage before it was skipped")
        let deadLetterQueue = try #require(subscription.deadLetterQueue)
        #expect(deadLetterQueue == queue + ".dead-letter")
        let channel = try await connection.openChannel()
        let dead = try await Self.first(of: deadLetterQueue, on: channel)
        #expect(dead.body == Self.garbage)
        #expect(dead.properties.headers?["x-death"] != nil)
        // Reported before the iterator went on to the next delivery.
        #expect(subscription.undecodableCount == 1)
        #expect(reported.all.map(\.delivery.body) == [Self.garbage])
        #expect(reported.all.map(\.queue) == [subscription.queue])
        #expect(reported.all.map(\.deadLetterQueue) == [deadLetterQueue])
        #expect(reported.all.map(\.error.code) == [.invalidEnvelope])

        try await subscription.cancel()
        for name in [queue, deadLetterQueue] { try await channel.queueDelete(name) }
        for name in [exchange.name, exchange.name + ".dead-letter"] { try await channel.exchangeDelete(name) }
        try await connection.close()
    }

    @Test func anUndecodableDeliveryOnAFanoutQueueIsDeadLetteredAndReported() async throws {
        let connection = try await TestBroker.connect()
        let exchange = try await RabbitMQFanoutExchange.declare(TestBroker.uniqueName("dl-fanout"), on: connection)
        let reported = Recorded<RabbitMQUndecodableDelivery>()
        let subscription = try await exchange.subscribe(Shipment.self, onUndecodable: { reported.append($0) })
        try await exchange.channel.publishAndWaitForConfirm(Self.garbage, exchange: exchange.name, routingKey: "")
        try await exchange.publish(PatternsExchangeTests.envelope(2, "all"))

        #expect(try await Self.next(subscription).data.id == 2, "the garbage before it was skipped")
        let deadLetterQueue = try #require(subscription.deadLetterQueue)
        #expect(deadLetterQueue == exchange.name + ".dead-letter")
        let channel = try await connection.openChannel()
        let dead = try await Self.first(of: deadLetterQueue, on: channel)
        #expect(dead.body == Self.garbage)
        #expect(dead.properties.headers?["x-death"] != nil)
        // Reported before the iterator went on to the next delivery.
        #expect(subscription.undecodableCount == 1)
        #expect(reported.all.map(\.delivery.body) == [Self.garbage])
        #expect(reported.all.map(\.queue) == [subscription.queue])
        #expect(reported.all.map(\.deadLetterQueue) == [deadLetterQueue])
        #expect(reported.all.map(\.error.code) == [.invalidEnvelope])

        try await subscription.cancel()
        try await channel.queueDelete(deadLetterQueue)
        for name in [exchange.name, exchange.name + ".dead-letter"] { try await channel.exchangeDelete(name) }
        try await connection.close()
    }

    /// A direct subscription needs a queue name: its dead-letter queue is named after it.
    @Test func aDirectSubscriptionToANamelessQueueIsRefused() async throws {
        let connection = try await TestBroker.connect()
        let exchange = try await RabbitMQDirectExchange.declare(TestBroker.uniqueName("dl-nameless"), on: connection)
        let error = await #expect(throws: RabbitMQPatternsError.self) {
            _ = try await exchange.subscribe(Shipment.self, queue: "", bindingKeys: ["eu"])
        }
        #expect(error?.code == .invalidConfiguration)
        try await exchange.channel.exchangeDelete(exchange.name)
        try await connection.close()
    }

    /// Recovery declares a fanout subscriber's server-named queue again under a new name; the
    /// subscription reports that name, and keeps receiving.
    @Test func aServerNamedSubscriptionQueueReportsItsNewNameAfterRecovery() async throws {
        let name = TestBroker.uniqueName("dl-rename")
        let connection = try await TestBroker.connect(name: name)
        let events = connection.events()
        let exchange = try await RabbitMQFanoutExchange.declare(TestBroker.uniqueName("dl-rename-x"), on: connection)
        let subscription = try await exchange.subscribe(Shipment.self)
        let old = subscription.queue

        try await TestBroker.closeConnection(named: name)
        var renamed: String?
        for await event in events {
            if case .queueRenamed(let from, let to) = event, from == old { renamed = to }
            if case .recovered = event { break }
        }
        let new = try #require(renamed)
        #expect(new != old)
        #expect(subscription.queue == new)

        try await exchange.publish(PatternsExchangeTests.envelope(3, "all"))
        #expect(try await Self.next(subscription).data.id == 3)

        try await subscription.cancel()
        let channel = try await connection.openChannel()
        _ = try? await channel.queueDelete(exchange.name + ".dead-letter")
        for name in [exchange.name, exchange.name + ".dead-letter"] { try await channel.exchangeDelete(name) }
        try await connection.close()
    }
}
