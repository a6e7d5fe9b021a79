import InMemoryTracing
import RabbitMQ
import RabbitMQTestSupport
import Testing
import Tracing

/// The Tracing article's samples, compiled and run. Keep each function identical to its
/// code block in Sources/RabbitMQ/RabbitMQ.docc/Tracing.md.
@Suite("Tracing article", .timeLimit(.minutes(2)))
struct TracingArticleTests {
    @Test func theSamplesContinueAPublishersTrace() async throws {
        let tracer = InMemoryTracer()
        let connection = try await connectTraced(uri: TestBroker.url, tracer: tracer)
        #expect(connection.tracer != nil)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish("order", routingKey: queue.name)
        try await channel.publish("order", routingKey: queue.name)
        let consumer = try await channel.consume(queue: queue.name)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await handleOrders(connection: connection, consumer: consumer, queue: queue.name) }
            try await eventually("both messages handled") {
                tracer.finishedSpans.filter { $0.kind == .consumer }.count == 2
            }
            try await consumer.cancel()
            try await group.waitForAll()
        }
        let spans = tracer.finishedSpans
        for process in spans.filter({ $0.kind == .consumer }) {
            #expect(spans.contains { $0.kind == .producer && $0.spanID == process.parentSpanID && $0.traceID == process.traceID })
        }

        // No tracer is bootstrapped in the tests: the sample's span is a no-op, the handling runs.
        try await channel.publish("order", routingKey: queue.name)
        let delivery = try #require(try await channel.get(queue: queue.name, autoAck: true))
        try await handleInOwnSpan(delivery)
        try await connection.close()
    }

    /// Compiled, never run: the process-wide bootstrap happens once, and tests must not take it.
    func bootstrapCompiles() {
        _ = bootstrapTracing as (InMemoryTracer) -> Void
    }
}

/// What the samples call to handle a message.
func handle(_ delivery: RabbitMQDelivery) async throws {}

func connectTraced(uri: String, tracer: some Tracer) async throws -> RabbitMQConnection {
    var configuration = try RabbitMQConfiguration(uri: uri)
    configuration.tracer = tracer  // nil: the tracer bootstrapped with InstrumentationSystem
    return try await RabbitMQConnection.connect(configuration: configuration)
}

func bootstrapTracing(_ tracer: some Tracer) {
    InstrumentationSystem.bootstrap(tracer)
}

func handleOrders(connection: RabbitMQConnection, consumer: RabbitMQConsumer, queue: String) async throws {
    for try await delivery in consumer {
        try await connection.withProcessSpan(for: delivery, queue: queue) {
            try await handle(delivery)  // its spans and publishes join the publisher's trace
            try delivery.ack()
        }
    }
}

func handleInOwnSpan(_ delivery: RabbitMQDelivery) async throws {
    let context = delivery.extractServiceContext(using: InstrumentationSystem.instrument)
    try await withSpan("handle order", context: context, ofKind: .consumer) { _ in
        try await handle(delivery)
    }
}
