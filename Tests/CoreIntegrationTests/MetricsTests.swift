import Metrics
import MetricsTestKit
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// Every counter and gauge of ``RabbitMQMetrics`` after a known workload on a real broker,
/// recovery included, through swift-metrics' test backend given to the connection alone.
@Suite("Metrics", .timeLimit(.minutes(3)))
struct MetricsTests {
    @Test func everyCounterMatchesAKnownWorkloadAcrossARecovery() async throws {
        let backend = TestMetrics()
        let name = TestBroker.uniqueName("metrics")
        var configuration = try TestBroker.configuration(name: name)
        configuration.metricsFactory = backend
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let log = ConnectionEventLog(connection)
        let dimensions = [(RabbitMQMetrics.connectionDimension, name)]
        func counter(_ label: String) throws -> Int64 { try backend.expectCounter(label, dimensions).totalValue }
        func gauge(_ label: String) throws -> Double? { try backend.expectMeter(label, dimensions).lastValue }

        let publisher = try await connection.openChannel()
        let consumerChannel = try await connection.openChannel()
        let queue = try await publisher.queueDeclare(TestBroker.uniqueName("metrics-q"), durable: true)

        // 100 confirmed publishes, and 3 mandatory ones that nothing routes (returned, then acked).
        try await publisher.confirmSelect()
        for n in 0..<100 {
            #expect(try await publisher.publishAndWaitForConfirm(Array("m\(n)".utf8), routingKey: queue.name) == .acked)
        }
        for _ in 0..<3 {
            let outcome = try await publisher.publishAndWaitForConfirm(
                Array("lost".utf8), routingKey: TestBroker.uniqueName("nowhere"), mandatory: true)
            guard case .returned = outcome else {
                Issue.record("expected a return, got \(outcome)")
                return
            }
        }

        // 100 deliveries: 50 acked one by one, 10 rejected, the other 40 nacked back with one
        // `multiple` nack, redelivered, and acked with one `multiple` ack.
        try await consumerChannel.qos(prefetchCount: 100)
        let consumer = try await consumerChannel.consume(queue: queue.name)
        var iterator = consumer.makeAsyncIterator()
        var held: [RabbitMQDelivery] = []
        for n in 0..<100 {
            let delivery = try #require(try await iterator.next())
            if n < 50 {
                try delivery.ack()
            } else if n < 60 {
                try delivery.reject(requeue: false)
            } else {
                held.append(delivery)
            }
        }
        try held.last!.nack(multiple: true, requeue: true)
        var redelivered: RabbitMQDelivery?
        for _ in 0..<40 {
            let delivery = try #require(try await iterator.next())
            #expect(delivery.redelivered)
            redelivered = delivery
        }
        try redelivered!.ack(multiple: true)
        // A round trip after the settlements: the turn that sent them reported them first.
        #expect(try await consumerChannel.queueDeclare(queue.name, passive: true).messageCount == 0)

        #expect(try counter(RabbitMQMetrics.published) == 103)
        #expect(try counter(RabbitMQMetrics.confirmed) == 103)
        #expect(try counter(RabbitMQMetrics.nacked) == 0)
        #expect(try counter(RabbitMQMetrics.returned) == 3)
        #expect(try counter(RabbitMQMetrics.delivered) == 140)
        #expect(try counter(RabbitMQMetrics.redelivered) == 40)
        #expect(try counter(RabbitMQMetrics.consumerAcked) == 90)
        #expect(try counter(RabbitMQMetrics.consumerRejected) == 10)
        #expect(try counter(RabbitMQMetrics.consumerNacked) == 40)
        #expect(try gauge(RabbitMQMetrics.connectionsOpen) == 1)
        #expect(try gauge(RabbitMQMetrics.channelsOpen) == 2)
        // Meters that never moved have no value yet: zero.
        #expect(try gauge(RabbitMQMetrics.confirmsOutstanding) ?? 0 == 0)
        #expect(try gauge(RabbitMQMetrics.publishBuffered) ?? 0 == 0)

        // The broker closes the connection: one recovery, timed; the consumer goes on, and
        // its delivery tags (new on the new connection) count as before.
        try await TestBroker.closeConnection(named: name, reason: "metrics test")
        try await log.recovered()
        #expect(try counter(RabbitMQMetrics.recoveries) == 1)
        #expect(try backend.expectTimer(RabbitMQMetrics.recoveryDuration, dimensions).values.count == 1)
        #expect(try backend.expectMeter(RabbitMQMetrics.connectionsOpen, dimensions).values == [1, 0, 1])

        #expect(try await publisher.publishAndWaitForConfirm(Array("after".utf8), routingKey: queue.name) == .acked)
        let after = try #require(try await iterator.next())
        #expect(after.bodyString == "after")
        try after.ack()
        #expect(try await consumerChannel.queueDeclare(queue.name, passive: true).messageCount == 0)
        #expect(try counter(RabbitMQMetrics.published) == 104)
        #expect(try counter(RabbitMQMetrics.confirmed) == 104)
        #expect(try counter(RabbitMQMetrics.delivered) == 141)
        #expect(try counter(RabbitMQMetrics.consumerAcked) == 91)

        try await publisher.queueDelete(queue.name)
        try await connection.close()
        try await log.next("closed") { if case .closed = $0 { true } else { false } }
        #expect(try gauge(RabbitMQMetrics.connectionsOpen) == 0)
        #expect(try backend.expectTimer(RabbitMQMetrics.blockedDuration, dimensions).values.isEmpty)
    }

    @Test func nothingIsRecordedBeyondTheConnectionsOwnDimension() async throws {
        let backend = TestMetrics()
        var configuration = try TestBroker.configuration(name: TestBroker.uniqueName("metrics-dim"))
        configuration.metricsFactory = backend
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        try await connection.openChannel().queueDeclare("", exclusive: true)
        try await connection.close()
        for counter in backend.counters {
            #expect(counter.label.hasPrefix("rabbitmq."))
            #expect(counter.dimensions.map(\.0) == [RabbitMQMetrics.connectionDimension])
            #expect(counter.dimensions.first?.1 == connection.name)
        }
    }
}

/// The Metrics article's example: keep it identical to its code block.
func connectWithMetrics(uri: String, metrics: any MetricsFactory) async throws -> RabbitMQConnection {
    var configuration = try RabbitMQConfiguration(uri: uri)
    configuration.connectionName = "billing-worker"  // the `connection` dimension
    configuration.metricsFactory = metrics  // nil: MetricsSystem's, as bootstrapped
    return try await RabbitMQConnection.connect(configuration: configuration)
}

extension MetricsTests {
    @Test func theArticlesExampleReportsUnderItsConnectionName() async throws {
        let backend = TestMetrics()
        let connection = try await connectWithMetrics(uri: TestBroker.url, metrics: backend)
        try await connection.openChannel().queueDeclare("", exclusive: true)
        #expect(try backend.expectMeter(RabbitMQMetrics.connectionsOpen, [("connection", "billing-worker")]).lastValue == 1)
        try await connection.close()
    }
}
