import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

/// Exchange and retry-queue handles outlive a publish the broker refused (issue 13: the
/// broker closed the handle's channel, and every later publish failed with it).
@Suite("Patterns: handles after a refused publish", .timeLimit(.minutes(2)))
struct HandleChannelTests {
    @Test func anExchangeHandlePublishesAgainAfterTheBrokerClosedItsChannel() async throws {
        let connection = try await TestBroker.connect()
        let name = TestBroker.uniqueName("handle-x")
        let queue = TestBroker.uniqueName("handle-q")
        let orders = try await RabbitMQDirectExchange.declare(name, on: connection)
        let admin = try await connection.openChannel()
        try await admin.queueDeclare(queue, durable: true)
        try await admin.queueBind(queue: queue, exchange: name, routingKey: "eu")
        try await orders.publish(PatternsExchangeTests.envelope(1, "eu"), routingKey: "eu")

        // The exchange goes under the handle: the broker closes its channel with a 404.
        try await admin.exchangeDelete(name)
        let refused = await #expect(throws: RabbitMQError.self) {
            try await orders.publish(PatternsExchangeTests.envelope(2, "eu"), routingKey: "eu")
        }
        #expect(refused?.code == .notFound)
        #expect(!orders.channel.isOpen)

        // Declared again, the same handle publishes on a new channel.
        try await admin.exchangeDeclare(name, type: .direct, durable: true)
        try await admin.queueBind(queue: queue, exchange: name, routingKey: "eu")
        try await orders.publish(PatternsExchangeTests.envelope(3, "eu"), routingKey: "eu")
        #expect(orders.channel.isOpen)
        #expect(try await admin.queueDeclare(queue, passive: true).messageCount == 2)

        // A channel the application closed through the handle's `channel` is not replaced:
        // only the broker's closes are (review of issue 13).
        try await orders.channel.close()
        await #expect(throws: RabbitMQError.self) {
            try await orders.publish(PatternsExchangeTests.envelope(4, "eu"), routingKey: "eu")
        }
        #expect(try await admin.queueDeclare(queue, passive: true).messageCount == 2)

        // A handle its application closed stays closed.
        try await orders.close()
        await #expect(throws: RabbitMQError.self) {
            try await orders.publish(PatternsExchangeTests.envelope(4, "eu"), routingKey: "eu")
        }
        try await admin.queueDelete(queue)
        try await admin.exchangeDelete(name)
        try await connection.close()
    }

    @Test func aRetryQueueHandlePublishesAgainAfterTheBrokerClosedItsChannel() async throws {
        let connection = try await TestBroker.connect()
        let name = TestBroker.uniqueName("handle-retry")
        let jobs = try await RabbitMQRetryQueue.declare(name, on: connection)
        let envelope = RabbitMQEnvelope(type: "jobs.job.requested", data: ["id": 1])
        try await jobs.publish(envelope)

        let admin = try await connection.openChannel()
        try await admin.exchangeDelete(jobs.workExchange)
        let refused = await #expect(throws: RabbitMQError.self) { try await jobs.publish(envelope) }
        #expect(refused?.code == .notFound)

        // Declaring the retry queue again restores its exchange; the old handle goes on.
        let again = try await RabbitMQRetryQueue.declare(name, on: connection)
        try await again.close()
        try await jobs.publish(envelope)
        #expect(try await admin.queueDeclare(jobs.workQueue, passive: true).messageCount == 2)
        try await jobs.delete()
        try await jobs.close()
        try await connection.close()
    }
}
