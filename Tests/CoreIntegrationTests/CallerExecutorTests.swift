import RabbitMQ
import RabbitMQTestSupport
import Testing

/// The hot paths run on the caller's executor: an `await` from an actor (the main actor, or
/// one of the application's) that does not need to suspend comes back without a hop through
/// the global executor. Each hop is a job on the actor's executor, counted by
/// ``CountingActor``: a publish that hopped would take one per message.
@Suite("Calls stay on the caller's executor", .timeLimit(.minutes(5)))
struct CallerExecutorTests {
    static let messages = 2_000

    @Test func publishingFromAnActorDoesNotHopPerMessage() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("caller-publish"), exclusive: true)
        let actor = CountingActor()
        let (published, hops) = try await actor.run {
            for index in 0..<Self.messages {
                try await channel.publish(Array("\(index)".utf8), routingKey: queue.name)
            }
            return Self.messages
        }
        // The only hops left: a yield every 256 publishes (so a publisher never keeps a pool
        // thread from other tasks) and waits for room in the buffer when the socket is slow.
        #expect(hops < published / 4, "\(hops) hops for \(published) publishes")
        try await eventually("every message to be in the queue") {
            try await channel.queueDeclare(queue.name, passive: true).messageCount == Self.messages
        }
        try await connection.close()
    }

    @Test func anOutcomeAlreadyKnownIsReturnedWithoutAHop() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("caller-confirm"), exclusive: true)
        try await channel.confirmSelect(maxOutstanding: Self.messages)
        var confirmations: [RabbitMQConfirmation] = []
        for index in 0..<Self.messages {
            confirmations.append(try await channel.publishWithConfirm(Array("\(index)".utf8), routingKey: queue.name))
        }
        // Every outcome is in once the last one is (the broker confirms in order).
        #expect(try await confirmations.last!.outcome() == .acked)
        let actor = CountingActor()
        let (acked, hops) = try await actor.run {
            var acked = 0
            for confirmation in confirmations where try await confirmation.outcome() == .acked { acked += 1 }
            return acked
        }
        #expect(acked == Self.messages)
        #expect(hops == 0, "\(hops) hops for \(acked) outcomes that were known already")
        try await connection.close()
    }

    @Test func deliveriesAlreadyBufferedAreHandedOutWithoutAHop() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("caller-consume"), exclusive: true)
        try await channel.confirmSelect()
        for index in 0..<Self.messages {
            _ = try await channel.publishWithConfirm(Array("\(index)".utf8), routingKey: queue.name)
        }
        try await eventually("every message to be in the queue") {
            try await channel.queueDeclare(queue.name, passive: true).messageCount == Self.messages
        }
        try await channel.qos(prefetchCount: UInt16(Self.messages))
        let consumer = try await channel.consume(queue: queue.name)
        // Every message handed to the consumer first: the bound below is about the library,
        // not about how the broker splits its writes while the loop runs.
        let counter = try await connection.openChannel()
        try await eventually("every message to be delivered") {
            try await counter.queueDeclare(queue.name, passive: true).messageCount == 0
        }
        let actor = CountingActor()
        let (received, hops) = try await actor.run {
            var received = 0
            for try await delivery in consumer {
                received += 1
                if received % 100 == 0 { try delivery.ack(multiple: true) }
                if received == Self.messages { break }
            }
            return received
        }
        #expect(received == Self.messages)
        // One hop per batch the iterator waited for, and a yield per 128 handed out without
        // waiting; never one per delivery.
        #expect(hops < received / 4, "\(hops) hops for \(received) deliveries")
        try await connection.close()
    }
}
