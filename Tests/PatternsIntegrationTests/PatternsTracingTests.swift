import Foundation
import InMemoryTracing
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing
import Tracing

/// The patterns keep one trace: an RPC call and its answer, a message and its retries, a
/// subscription's handling. Each connection has its own W3C-propagating in-memory tracer.
@Suite("Patterns: tracing", .timeLimit(.minutes(2)))
struct PatternsTracingTests {
    static func connect(tracer: W3CInMemoryTracer) async throws -> RabbitMQConnection {
        var configuration = try TestBroker.configuration()
        configuration.tracer = tracer
        return try await RabbitMQConnection.connect(configuration: configuration)
    }

    static func string(_ span: FinishedInMemorySpan, _ key: String) -> String? {
        if case .string(let value) = span.attributes.get(key) { value } else { nil }
    }

    @Test func anRPCRoundTripIsOneTrace() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let queue = TestBroker.uniqueName("traced-rpc")
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        let reply = try await withThrowingTaskGroup(of: Void.self) { group in
            let server = RabbitMQRPCServer(connection: connection, queue: queue) { request in request.body }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            return try await RabbitMQRPCClient.withClient(connection: connection) { client in
                try await client.call(Array("ping".utf8), routingKey: queue)
            }
        }
        try await eventually("the server's process span to end") {
            tracer.finishedSpans.contains { $0.kind == .consumer }
        }
        let spans = tracer.finishedSpans
        let call = try #require(spans.first { $0.kind == .client })
        #expect(call.operationName == "call \(queue)")
        #expect(call.parentSpanID == nil)
        let request = try #require(spans.first { $0.kind == .producer && $0.parentSpanID == call.spanID })
        #expect(request.operationName == "publish amq.default")
        let process = try #require(spans.first { $0.kind == .consumer })
        #expect(process.operationName == "process \(queue)")
        #expect(process.parentSpanID == request.spanID)
        #expect(Self.string(process, "messaging.message.conversation_id") == Self.string(request, "messaging.message.conversation_id"))
        let answer = try #require(spans.first { $0.kind == .producer && $0.parentSpanID == process.spanID })
        for span in [request, process, answer] {
            #expect(span.traceID == call.traceID, "\(span.operationName)")
        }
        // The reply carries the trace back to the caller.
        #expect(reply.properties.headers?["traceparent"]?.stringValue == "00-\(call.traceID)-\(answer.spanID)-01")
        try await setup.queueDelete(queue)
        try await connection.close()
    }

    @Test func anRPCHandlerErrorIsRecordedOnTheServersProcessSpan() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let queue = TestBroker.uniqueName("traced-rpc-error")
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        let error = try await withThrowingTaskGroup(of: Void.self) { group in
            let server = RabbitMQRPCServer(connection: connection, queue: queue) { _ in
                throw TestSupportError("no price")
            }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            return try await RabbitMQRPCClient.withClient(connection: connection) { client in
                await #expect(throws: RabbitMQPatternsError.self) { try await client.call(Array("ping".utf8), routingKey: queue) }
            }
        }
        #expect(error?.code == .remoteError)
        try await eventually("the server's process span to end") {
            tracer.finishedSpans.contains { $0.kind == .consumer }
        }
        let spans = tracer.finishedSpans
        let process = try #require(spans.first { $0.kind == .consumer })
        #expect(Self.string(process, "error.type") == "RabbitMQTestSupport.TestSupportError")
        #expect(process.status?.code == .error)
        // The client's span records the remote error too, in the same trace.
        let call = try #require(spans.first { $0.kind == .client })
        #expect(call.traceID == process.traceID)
        #expect(Self.string(call, "error.type") == "remote error")
        try await setup.queueDelete(queue)
        try await connection.close()
    }

    @Test func aRetriedMessageKeepsItsTraceAcrossAttempts() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let retry = try await RabbitMQRetryQueue.declare(
            TestBroker.uniqueName("traced-jobs"), on: connection, configuration: .init(delays: [.milliseconds(100)]))
        let recorder = AttemptRecorder()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await retry.run(Job.self) { attempt in
                    recorder.record(attempt)
                    if attempt.attempt == 1 { throw TestSupportError("first attempt fails") }
                }
            }
            defer { group.cancelAll() }
            try await retry.publish(RabbitMQEnvelope(type: "jobs.job.requested", data: Job(id: "j-1")))
            try await eventually("two process spans") {
                tracer.finishedSpans.filter { $0.kind == .consumer }.count == 2
            }
        }
        #expect(recorder.all.map(\.number) == [1, 2])
        let spans = tracer.finishedSpans
        let published = try #require(spans.first { $0.kind == .producer && $0.parentSpanID == nil })
        let processes = spans.filter { $0.kind == .consumer }
        #expect(processes.count == 2)
        for process in processes {
            #expect(process.traceID == published.traceID)
            #expect(process.parentSpanID == published.spanID)
        }
        #expect(Self.string(processes[0], "error.type") == "RabbitMQTestSupport.TestSupportError")
        #expect(Self.string(processes[1], "error.type") == nil)
        let republish = try #require(spans.first { $0.kind == .producer && $0.spanID != published.spanID })
        #expect(republish.traceID == published.traceID)
        try await retry.delete()
        try await connection.close()
    }

    @Test func aSubscriptionsHandlingContinuesThePublishersTrace() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let exchange = try await RabbitMQDirectExchange.declare(TestBroker.uniqueName("traced-direct"), on: connection)
        let subscription = try await exchange.subscribe(
            Shipment.self, queue: TestBroker.uniqueName("traced-eu"), bindingKeys: ["eu"])
        try await exchange.publish(
            RabbitMQEnvelope(type: "shop.shipment.created", data: Shipment(id: 1, region: "eu")), routingKey: "eu")
        let published = try #require(tracer.finishedSpans.first { $0.kind == .producer })
        #expect(Self.string(published, "messaging.destination.name") == "\(exchange.name):eu")

        var iterator = subscription.makeAsyncIterator()
        let message = try #require(try await iterator.next())
        #expect(message.extractServiceContext(using: tracer).inMemorySpanContext?.traceID == published.traceID)
        try await subscription.withProcessSpan(for: message) { try message.ack() }
        let process = try #require(tracer.finishedSpans.first { $0.kind == .consumer })
        #expect(process.traceID == published.traceID)
        #expect(process.parentSpanID == published.spanID)
        #expect(Self.string(process, "messaging.destination.name") == "\(exchange.name):eu:\(subscription.queue)")
        try await subscription.channel.queueDelete(subscription.queue)
        if let deadLetters = subscription.deadLetterQueue { try await subscription.channel.queueDelete(deadLetters) }
        try await subscription.cancel()
        try await exchange.close()
        try await connection.close()
    }

    @Test func aSubscriptionServiceRunsItsHandlerInAProcessSpan() async throws {
        let tracer = W3CInMemoryTracer()
        let connection = try await Self.connect(tracer: tracer)
        let exchange = try await RabbitMQDirectExchange.declare(TestBroker.uniqueName("traced-service"), on: connection)
        let subscription = try await exchange.subscribe(
            Shipment.self, queue: TestBroker.uniqueName("traced-service-q"), bindingKeys: ["eu"])
        let (seen, handled) = AsyncStream<InMemorySpanContext?>.makeStream()
        let service = RabbitMQSubscriptionService(subscription: subscription) { _ in
            handled.yield(ServiceContext.current?.inMemorySpanContext)
        }
        let running = Task { try await service.run() }
        try await exchange.publish(
            RabbitMQEnvelope(type: "shop.shipment.created", data: Shipment(id: 2, region: "eu")), routingKey: "eu")
        let published = try #require(tracer.finishedSpans.first { $0.kind == .producer })
        var iterator = seen.makeAsyncIterator()
        let inHandler = try #require(await iterator.next() ?? nil)
        #expect(inHandler.traceID == published.traceID)
        #expect(inHandler.parentSpanID == published.spanID)
        running.cancel()
        try await running.value
        let cleanup = try await connection.openChannel()
        try await cleanup.queueDelete(subscription.queue)
        if let deadLetters = subscription.deadLetterQueue { try await cleanup.queueDelete(deadLetters) }
        try await exchange.close()
        try await connection.close()
    }
}
