import Foundation
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

struct Shipment: Codable, Sendable, Equatable {
    var id: Int
    var region: String
}

/// Direct, topic and fanout exchanges end to end, with envelopes.
@Suite("Patterns: exchanges", .timeLimit(.minutes(2)))
struct PatternsExchangeTests {
    static func envelope(_ id: Int, _ region: String, type: String = "shop.shipment.created") -> RabbitMQEnvelope<Shipment> {
        RabbitMQEnvelope(
            type: type, data: Shipment(id: id, region: region),
            metadata: RabbitMQEnvelopeMetadata(source: "tests", correlationID: "corr-\(id)"))
    }

    /// The next `count` messages, acknowledged.
    static func take<P>(_ count: Int, from subscription: RabbitMQSubscription<P>) async throws -> [RabbitMQEnvelopeMessage<P>] {
        var messages: [RabbitMQEnvelopeMessage<P>] = []
        for try await message in subscription {
            try message.ack()
            messages.append(message)
            if messages.count == count { break }
        }
        return messages
    }

    @Test func aSubscriptionIteratedOnAnActorDoesNotHopPerMessage() async throws {
        let connection = try await TestBroker.connect()
        let exchange = try await RabbitMQDirectExchange.declare(TestBroker.uniqueName("direct-actor"), on: connection)
        let subscription = try await exchange.subscribe(
            Shipment.self, queue: TestBroker.uniqueName("actor"), bindingKeys: ["eu"], prefetch: 400)
        for id in 0..<400 { try await exchange.publish(Self.envelope(id, "eu"), routingKey: "eu") }
        let counter = try await connection.openChannel()
        try await eventually("every message to be delivered") {
            try await counter.queueDeclare(subscription.queue, passive: true).messageCount == 0
        }
        let actor = CountingActor()
        let (ids, hops) = try await actor.run {
            var ids: [Int] = []
            for try await message in subscription {
                try message.ack()
                ids.append(message.data.id)
                if ids.count == 400 { break }
            }
            return ids
        }
        #expect(ids == Array(0..<400))
        // A hop per batch the iterator waited for and a yield per 128, never one per message
        // (before next(isolation:): 400 hops for 400 messages).
        #expect(hops < 100, "\(hops) hops for \(ids.count) messages")
        try await subscription.cancel()
        for queue in [subscription.queue] + [subscription.deadLetterQueue].compactMap({ $0 }) { try await counter.queueDelete(queue) }
        for name in [exchange.name, exchange.deadLetterExchange] { try await counter.exchangeDelete(name) }
        try await connection.close()
    }

    @Test func directRoutesByKeyToQueuesDeclaredWithArguments() async throws {
        let connection = try await TestBroker.connect()
        let exchange = try await RabbitMQDirectExchange.declare(TestBroker.uniqueName("direct"), on: connection)
        let options = RabbitMQQueueOptions(messageTTL: .seconds(60), maxLength: 100, overflow: .dropHead)
        let europe = try await exchange.subscribe(
            Shipment.self, queue: TestBroker.uniqueName("eu"), bindingKeys: ["eu", "uk"], options: options)
        let america = try await exchange.subscribe(Shipment.self, queue: TestBroker.uniqueName("us"), bindingKeys: ["us"])

        for (id, region) in [(1, "eu"), (2, "us"), (3, "uk"), (4, "eu")] {
            try await exchange.publish(Self.envelope(id, region), routingKey: region)
        }
        let unroutable = await #expect(throws: RabbitMQPatternsError.self) {
            try await exchange.publish(Self.envelope(5, "mars"), routingKey: "mars")
        }
        #expect(unroutable?.code == .unroutable)

        let european = try await Self.take(3, from: europe)
        #expect(european.map(\.data.id) == [1, 3, 4])
        #expect(european.map(\.delivery.routingKey) == ["eu", "uk", "eu"])
        #expect(european[0].delivery.properties.contentType == "application/json")
        #expect(european[0].delivery.properties.deliveryMode == .persistent)
        #expect(european[0].delivery.properties.messageID == european[0].envelope.id.uuidString.lowercased())
        #expect(european[0].envelope.metadata.correlationID == "corr-1")
        #expect(try await Self.take(1, from: america).map(\.data.id) == [2])

        let listing = try await TestBroker.ctl("list_queues", "--no-table-headers", "--silent", "name", "durable", "arguments")
        let line = try #require(listing.split(separator: "\n").first { $0.hasPrefix(europe.queue + "\t") })
        #expect(line.contains("x-message-ttl") && line.contains("60000"))
        #expect(line.contains("x-max-length") && line.contains("drop-head"))
        #expect(line.contains("\ttrue\t"), "durable: \(line)")

        try await europe.cancel()
        try await america.cancel()
        for queue in [europe.queue, america.queue] + [europe, america].compactMap(\.deadLetterQueue) {
            try await exchange.channel.queueDelete(queue)
        }
        for name in [exchange.name, exchange.deadLetterExchange] { try await exchange.channel.exchangeDelete(name) }
        try await connection.close()
    }

    @Test func aFullRejectPublishQueueNacksAndADropHeadQueueKeepsTheNewest() async throws {
        let connection = try await TestBroker.connect()
        let exchange = try await RabbitMQDirectExchange.declare(TestBroker.uniqueName("direct"), on: connection)
        let rejecting = try await exchange.subscribe(
            Shipment.self, queue: TestBroker.uniqueName("full"), bindingKeys: ["full"],
            options: .init(maxLength: 1, overflow: .rejectPublish))
        let dropping = try await exchange.subscribe(
            Shipment.self, queue: TestBroker.uniqueName("drop"), bindingKeys: ["drop"],
            options: .init(maxLength: 1, overflow: .dropHead))
        // Stop consuming so the queues fill up.
        try await rejecting.cancel()
        try await dropping.cancel()

        try await exchange.publish(Self.envelope(1, "full"), routingKey: "full")
        let refused = await #expect(throws: RabbitMQPatternsError.self) {
            try await exchange.publish(Self.envelope(2, "full"), routingKey: "full")
        }
        #expect(refused?.code == .nacked)

        try await exchange.publish(Self.envelope(1, "drop"), routingKey: "drop")
        try await exchange.publish(Self.envelope(2, "drop"), routingKey: "drop")
        let kept = try #require(try await exchange.channel.get(queue: dropping.queue, autoAck: true))
        #expect(try kept.envelope(Shipment.self).data.id == 2)
        #expect(try await exchange.channel.get(queue: dropping.queue, autoAck: true) == nil)

        for queue in [rejecting.queue, dropping.queue] + [rejecting, dropping].compactMap(\.deadLetterQueue) {
            try await exchange.channel.queueDelete(queue)
        }
        for name in [exchange.name, exchange.deadLetterExchange] { try await exchange.channel.exchangeDelete(name) }
        try await connection.close()
    }

    @Test func topicRoutesEventsByPatternAndDeadLettersRejects() async throws {
        let connection = try await TestBroker.connect()
        let events = try await RabbitMQTopicExchange.declare(TestBroker.uniqueName("events"), on: connection)
        let created = try await events.subscribe(Shipment.self, queue: TestBroker.uniqueName("created"), patterns: ["shop.*.created"])
        let everything = try await events.subscribe(Shipment.self, queue: TestBroker.uniqueName("all"), patterns: ["shop.#"])

        // Not an envelope; then a valid one that the subscriber itself rejects.
        try await events.channel.publishAndWaitForConfirm(
            Array("garbage".utf8), exchange: events.name, routingKey: "shop.order.created")
        var first = Self.envelope(1, "eu", type: "shop.order.created")
        first.version = "2.0"
        try await events.publish(first, headers: ["tenant": "acme"])
        try await events.publish(Self.envelope(2, "eu", type: "shop.order.shipped"))
        try await events.publish(Self.envelope(3, "eu", type: "shop.refund.created"))
        try await events.publish(Self.envelope(4, "eu", type: "other.thing.created"))

        var iterator = created.makeAsyncIterator()
        let one = try #require(try await iterator.next())
        #expect(one.data.id == 1, "the garbage before it was skipped")
        let headers = one.delivery.properties.headers
        #expect(headers?["event_type"] == .string("shop.order.created"))
        #expect(headers?["version"] == .string("2.0"))
        #expect(headers?["tenant"] == .string("acme"))
        #expect(one.delivery.routingKey == "shop.order.created")
        #expect(one.delivery.properties.correlationID == "corr-1")
        #expect(one.delivery.properties.appID == "tests")
        try one.ack()
        let three = try #require(try await iterator.next())
        #expect(three.data.id == 3)
        try three.reject()

        #expect(try await Self.take(3, from: everything).map(\.data.id) == [1, 2, 3])

        // Both the garbage and the rejected event are in the dead-letter queue, once each.
        let deadLetterQueue = try #require(created.deadLetterQueue)
        let channel = try await connection.openChannel()
        let deadLetters = try await channel.consume(queue: deadLetterQueue)
        var dead: [RabbitMQDelivery] = []
        for try await delivery in deadLetters {
            try delivery.ack()
            dead.append(delivery)
            if dead.count == 2 { break }
        }
        #expect(dead[0].bodyString == "garbage")
        #expect(try dead[1].envelope(Shipment.self).data.id == 3)
        #expect(dead.allSatisfy { $0.properties.headers?["x-death"] != nil })
        #expect(try await channel.queueDeclare(deadLetterQueue, passive: true).messageCount == 0)

        try await created.cancel()
        try await everything.cancel()
        for queue in [created.queue, everything.queue, deadLetterQueue, everything.deadLetterQueue ?? ""] {
            try await channel.queueDelete(queue)
        }
        try await channel.exchangeDelete(events.deadLetterExchange)
        try await channel.exchangeDelete(events.name)
        try await connection.close()
    }

    @Test func fanoutBroadcastsToEverySubscribersOwnQueue() async throws {
        let connection = try await TestBroker.connect()
        let notices = try await RabbitMQFanoutExchange.declare(TestBroker.uniqueName("notices"), on: connection)
        var subscribers: [RabbitMQSubscription<Shipment>] = []
        for _ in 0..<3 { subscribers.append(try await notices.subscribe(Shipment.self)) }
        #expect(Set(subscribers.map(\.queue)).count == 3)
        #expect(subscribers.allSatisfy { $0.queue.hasPrefix("amq.gen-") })

        try await notices.publish(Self.envelope(1, "all"))
        try await notices.publish(Self.envelope(2, "all"))
        for subscriber in subscribers {
            #expect(try await Self.take(2, from: subscriber).map(\.data.id) == [1, 2])
        }

        // Exclusive: another connection may not consume it.
        let other = try await TestBroker.connect()
        let otherChannel = try await other.openChannel()
        let locked = await #expect(throws: RabbitMQError.self) {
            _ = try await otherChannel.consume(queue: subscribers[0].queue)
        }
        #expect(locked?.code == .resourceLocked)
        try await other.close()

        // Cancelling removes the queue: the broker deletes an auto-delete queue once its
        // last consumer is gone, after the cancel-ok and not necessarily before the next
        // command, so wait for it to go (a 404 from a passive declare).
        let queue = subscribers[0].queue
        try await subscribers[0].cancel()
        // Probed from this connection: the queue is exclusive to it (another would get 405).
        try await eventually("the cancelled subscription's queue to be deleted") {
            let probe = try await connection.openChannel()
            do {
                _ = try await probe.queueDeclare(queue, passive: true)
                try await probe.close()
                return false
            } catch let error as RabbitMQError where error.code == .notFound {
                return true
            }
        }

        try await notices.channel.queueDelete(notices.deadLetterExchange)  // the queue of that name
        for name in [notices.name, notices.deadLetterExchange] { try await notices.channel.exchangeDelete(name) }
        try await connection.close()
    }
}
