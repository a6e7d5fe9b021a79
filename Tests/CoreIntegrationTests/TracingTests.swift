import Foundation
import InMemoryTracing
import RabbitMQ
import RabbitMQTestSupport
import Testing
import Tracing

/// Distributed tracing on a real broker: what publishing injects and records, what a consumer
/// continues, and nothing at all without a tracer. Every connection gets its own tracer
/// through its configuration; the process-wide `InstrumentationSystem` is never bootstrapped.
@Suite("Tracing", .timeLimit(.minutes(2)))
struct TracingTests {
    static func connect(tracer: (any Tracer)?) async throws -> RabbitMQConnection {
        var configuration = try TestBroker.configuration()
        configuration.tracer = tracer
        return try await RabbitMQConnection.connect(configuration: configuration)
    }

    /// The one message on `queue`, acknowledged.
    static func receive(from queue: String, on channel: RabbitMQChannel) async throws -> RabbitMQDelivery {
        let consumer = try await channel.consume(queue: queue)
        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        try delivery.ack()
        try await consumer.cancel()
        return delivery
    }

    static func string(_ span: FinishedInMemorySpan, _ key: String) -> String? {
        if case .string(let value) = span.attributes.get(key) { value } else { nil }
    }

    static func int(_ span: FinishedInMemorySpan, _ key: String) -> Int64? {
        if case .int64(let value) = span.attributes.get(key) { value } else { nil }
    }

    @Test func publishRecordsAProducerSpanAndInjectsItsContext() async throws {
        let tracer = InMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        #expect(connection.tracer != nil)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish(
            "traced", routingKey: queue.name,
            properties: RabbitMQProperties(headers: ["kept": "yes"], correlationID: "corr-7", messageID: "msg-7"))

        let span = try #require(tracer.finishedSpans.first)
        #expect(tracer.finishedSpans.count == 1)
        #expect(span.kind == .producer)
        #expect(span.operationName == "publish amq.default")
        #expect(span.parentSpanID == nil)
        #expect(Self.string(span, "messaging.system") == "rabbitmq")
        #expect(Self.string(span, "messaging.operation.type") == "send")
        #expect(Self.string(span, "messaging.destination.name") == queue.name)
        #expect(Self.string(span, "messaging.rabbitmq.destination.routing_key") == queue.name)
        #expect(Self.string(span, "messaging.message.id") == "msg-7")
        #expect(Self.string(span, "messaging.message.conversation_id") == "corr-7")
        #expect(Self.string(span, "server.address") == "127.0.0.1")
        #expect(try Self.int(span, "server.port") == Int64(TestBroker.port))
        #expect(Self.string(span, "error.type") == nil)

        let delivery = try await Self.receive(from: queue.name, on: channel)
        let headers = try #require(delivery.properties.headers)
        #expect(headers["kept"] == "yes")
        #expect(headers[InMemoryTracer.traceIDKey]?.stringValue == span.traceID)
        #expect(headers[InMemoryTracer.spanIDKey]?.stringValue == span.spanID)
        try await connection.close()
    }

    @Test func aPublishInsideASpanIsItsChild() async throws {
        let tracer = InMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        let exchange = TestBroker.uniqueName("orders")
        try await channel.exchangeDeclare(exchange, type: .topic, autoDelete: true)
        try await tracer.withSpan("checkout") { _ in
            try await channel.publish("order", exchange: exchange, routingKey: "order.created")
        }
        let spans = tracer.finishedSpans
        let parent = try #require(spans.first { $0.operationName == "checkout" })
        let publish = try #require(spans.first { $0.kind == .producer })
        #expect(publish.operationName == "publish \(exchange)")
        #expect(publish.traceID == parent.traceID)
        #expect(publish.parentSpanID == parent.spanID)
        #expect(Self.string(publish, "messaging.destination.name") == "\(exchange):order.created")
        try await connection.close()
    }

    @Test func aConsumerContinuesThePublishersTrace() async throws {
        let tracer = InMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish("traced", routingKey: queue.name, properties: RabbitMQProperties(messageID: "m-1"))
        let publish = try #require(tracer.finishedSpans.first)

        let delivery = try await Self.receive(from: queue.name, on: channel)
        #expect(delivery.extractServiceContext(using: tracer).inMemorySpanContext?.traceID == publish.traceID)
        let handledIn = try await connection.withProcessSpan(for: delivery, queue: queue.name) {
            ServiceContext.current?.inMemorySpanContext
        }
        let process = try #require(tracer.finishedSpans.first { $0.kind == .consumer })
        #expect(handledIn?.spanID == process.spanID)
        #expect(process.operationName == "process \(queue.name)")
        #expect(process.traceID == publish.traceID)
        #expect(process.parentSpanID == publish.spanID)
        #expect(Self.string(process, "messaging.operation.type") == "process")
        #expect(Self.string(process, "messaging.destination.name") == "\(queue.name):\(queue.name)")
        #expect(Self.string(process, "messaging.message.id") == "m-1")
        #expect(Self.int(process, "messaging.rabbitmq.message.delivery_tag") == Int64(delivery.deliveryTag))
        try await connection.close()
    }

    @Test func aHandlerErrorIsRecordedOnTheProcessSpan() async throws {
        let tracer = InMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish("traced", routingKey: queue.name)
        let delivery = try await Self.receive(from: queue.name, on: channel)
        await #expect(throws: TestSupportError.self) {
            try await connection.withProcessSpan(for: delivery) { throw TestSupportError("boom") }
        }
        let process = try #require(tracer.finishedSpans.first { $0.kind == .consumer })
        #expect(Self.string(process, "error.type") == "RabbitMQTestSupport.TestSupportError")
        #expect(process.status?.code == .error)
        try await connection.close()
    }

    @Test func aFailedPublishRecordsItsErrorType() async throws {
        let tracer = InMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        try await channel.close()
        await #expect(throws: RabbitMQError.self) { try await channel.publish("lost", routingKey: "nowhere") }
        let span = try #require(tracer.finishedSpans.first)
        #expect(span.kind == .producer)
        #expect(span.status?.code == .error)
        #expect(Self.string(span, "error.type") != nil)
        try await connection.close()
    }

    @Test func publishWithConfirmIsTracedAsWell() async throws {
        let tracer = InMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        try await channel.confirmSelect()
        let queue = try await channel.queueDeclare("", exclusive: true)
        #expect(try await channel.publishAndWaitForConfirm(Array("c".utf8), routingKey: queue.name) == .acked)
        let span = try #require(tracer.finishedSpans.first)
        let delivery = try await Self.receive(from: queue.name, on: channel)
        #expect(delivery.properties.headers?[InMemoryTracer.traceIDKey]?.stringValue == span.traceID)
        try await connection.close()
    }

    @Test func withoutATracerNothingIsAddedOrRecorded() async throws {
        let connection = try await Self.connect(tracer: nil)
        #expect(connection.tracer == nil)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish("plain", routingKey: queue.name)
        try await channel.publish("with headers", routingKey: queue.name, properties: RabbitMQProperties(headers: ["a": 1]))
        let consumer = try await channel.consume(queue: queue.name)
        var iterator = consumer.makeAsyncIterator()
        let plain = try #require(try await iterator.next())
        #expect(plain.properties.headers == nil)
        let withHeaders = try #require(try await iterator.next())
        #expect(withHeaders.properties.headers == ["a": 1])
        let ran = try await connection.withProcessSpan(for: plain) { ServiceContext.current == nil }
        #expect(ran)
        try await connection.close()
    }

    @Test func aW3CTracerWritesTraceparent() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish("traced", routingKey: queue.name)
        let span = try #require(tracer.finishedSpans.first)
        let delivery = try await Self.receive(from: queue.name, on: channel)
        #expect(delivery.properties.headers?["traceparent"]?.stringValue == "00-\(span.traceID)-\(span.spanID)-01")
        try await connection.close()
    }

    @Test func aTraceparentTheCallerSetIsKept() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let explicit = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        try await channel.publish(
            "explicit", routingKey: queue.name, properties: RabbitMQProperties(headers: ["traceparent": .string(explicit)]))
        let span = try #require(tracer.finishedSpans.first)
        #expect(span.traceID == "0af7651916cd43dd8448eb211c80319c")
        #expect(span.parentSpanID == "b7ad6b7169203331")
        let delivery = try await Self.receive(from: queue.name, on: channel)
        #expect(delivery.properties.headers?["traceparent"]?.stringValue == explicit)
        try await connection.close()
    }

    /// Other context in the headers (a W3C `baggage` header alone) is not a trace: the
    /// span's own `traceparent` still goes in, beside it.
    @Test func baggageAloneDoesNotStopTheTraceparent() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish(
            "with baggage", routingKey: queue.name,
            properties: RabbitMQProperties(headers: ["baggage": .string("tenant=acme")]))
        let span = try #require(tracer.finishedSpans.first)
        let delivery = try await Self.receive(from: queue.name, on: channel)
        let traceparent = delivery.properties.headers?["traceparent"]?.stringValue
        #expect(traceparent?.contains(span.traceID) == true, "\(String(describing: delivery.properties.headers))")
        #expect(delivery.properties.headers?["baggage"]?.stringValue == "tenant=acme")
        try await connection.close()
    }

    /// pika publishes with a W3C `traceparent` (as OpenTelemetry's Python instrumentation
    /// would); our consumer's process span continues that trace.
    @Test func ourConsumerContinuesATraceStartedByPika() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("traced-from-pika"), durable: true)
        let consumer = try await channel.consume(queue: queue.name)
        try await TestBroker.run("/usr/bin/env", ["python3", InteropTests.script, "publish-traced", TestBroker.url, queue.name])

        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        #expect(delivery.properties.headers?["tracestate"]?.stringValue == "rojo=00f067aa0ba902b7")
        #expect(delivery.extractServiceContext(using: tracer).inMemorySpanContext?.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        try await connection.withProcessSpan(for: delivery, queue: queue.name) { try delivery.ack() }
        let process = try #require(tracer.finishedSpans.first { $0.kind == .consumer })
        #expect(process.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(process.parentSpanID == "00f067aa0ba902b7")
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }
}
