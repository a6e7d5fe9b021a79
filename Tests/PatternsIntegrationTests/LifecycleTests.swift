import Foundation
import Logging
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing

/// What the handlers of a service under graceful shutdown did: how many started and finished,
/// and how often each message id was handled.
final class HandlerLog: Sendable {
    private struct State {
        var started = 0
        var finished = 0
        var handled: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// Opened when the handler numbered ``triggerAt`` starts.
    let reachedTrigger = Gate()
    let triggerAt: Int

    init(triggerAt: Int) { self.triggerAt = triggerAt }

    /// Records a start; returns its number (1, 2, ...).
    func start() -> Int {
        let number = state.withLock { state in
            state.started += 1
            return state.started
        }
        if number == triggerAt { reachedTrigger.open() }
        return number
    }

    func finish(_ id: String) {
        state.withLock { state in
            state.finished += 1
            state.handled[id, default: 0] += 1
        }
    }

    var started: Int { state.withLock { $0.started } }
    var finished: Int { state.withLock { $0.finished } }
    var handledOnce: Int { state.withLock { $0.handled.count } }
    var handledTwice: [String] { state.withLock { $0.handled.filter { $0.value > 1 }.map(\.key) } }

    /// The handler's body: the handler numbered ``triggerAt`` waits until its service is told to
    /// shut down gracefully, so at least one handler is in flight when that happens; the others
    /// give way once, as real work would.
    func handle(_ id: String) async {
        if start() == triggerAt {
            try? await gracefulShutdown()
        } else {
            await Task.yield()
        }
        finish(id)
    }
}

/// The services of the patterns module in a `ServiceGroup`: graceful shutdown under load
/// stops consuming, lets handlers in flight finish and settles their messages; nothing is
/// lost, nothing handled twice. Serialized: its load tests, run at once beside the rest of
/// the suite, starved other tests' rabbitmqctl calls on the 2-core machine.
@Suite("Patterns: service lifecycle", .serialized, .timeLimit(.minutes(3)))
struct LifecycleTests {
    static let messageCount = 2_000
    static let triggerAt = 500

    /// Runs `connection` and `services` in a group (the connection first, so it closes last)
    /// while `publish` runs, triggers graceful shutdown when `log` reaches its trigger, and
    /// returns once the group has finished and the publisher is done.
    static func runUnderLoad(
        connection: RabbitMQConnection, services: [any Service], log: HandlerLog,
        publish: @escaping @Sendable () async throws -> Void
    ) async throws {
        let group = ServiceGroup(
            services: [connection] + services, gracefulShutdownSignals: [], cancellationSignals: [],
            logger: Logger(label: "lifecycle-test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask { try await publish() }
            tasks.addTask {
                await log.reachedTrigger.wait()
                await group.triggerGracefulShutdown()
            }
            try await tasks.waitForAll()
        }
        #expect(!connection.isOpen, "the connection service closes the connection")
        #expect(connection.closeReason?.code == .closed)
    }

    /// Runs `publish` for message numbers 0..<messageCount from 8 tasks at once, so that the
    /// queue builds a backlog while the service consumes: one confirmed publish at a time would
    /// leave the consumer waiting.
    static func inParallel(_ publish: @escaping @Sendable (Int) async throws -> Void) async throws {
        let tasks = 8
        try await withThrowingDiscardingTaskGroup { group in
            for task in 0..<tasks {
                group.addTask {
                    for n in stride(from: task, to: messageCount, by: tasks) { try await publish(n) }
                }
            }
        }
    }

    /// Every message was handled exactly once or is ready in `queue` again, and every handler
    /// that started finished.
    static func expectNothingLost(_ log: HandlerLog, queue: String, extra: String = "") async throws {
        #expect(log.started == log.finished, "handlers in flight at shutdown finish")
        #expect(log.handledTwice.isEmpty, "handled twice: \(log.handledTwice)")
        #expect(log.handledOnce >= triggerAt)
        // Deliveries that reached the channel after basic.cancel are requeued by a reject the
        // queue takes in its own time: wait for the count to settle.
        try await eventually("\(messageCount) messages handled or ready in \(queue)") {
            let ready = Int(try await TestBroker.queueState(queue)?.messageCount ?? 0)
            return log.handledOnce + ready == messageCount
        }
        let ready = Int(try await TestBroker.queueState(queue)?.messageCount ?? 0)
        print("graceful shutdown\(extra): handled \(log.handledOnce), requeued or never delivered \(ready), of \(messageCount)")
    }

    @Test func retryWorkerFinishesItsHandlersAndLosesNothing() async throws {
        let connection = try await TestBroker.connect()
        let queue = try await RabbitMQRetryQueue.declare(
            TestBroker.uniqueName("lifecycle-retry"), on: connection, configuration: .init(concurrency: 20))
        let log = HandlerLog(triggerAt: Self.triggerAt)
        let worker = RabbitMQRetryQueueService(queue: queue, payload: Job.self) { attempt in
            await log.handle(attempt.data.id)
        }
        let publisher = try await TestBroker.connect()
        let publishing = try await RabbitMQRetryQueue.declare(queue.name, on: publisher, configuration: queue.configuration)
        try await Self.runUnderLoad(connection: connection, services: [worker], log: log) {
            try await Self.inParallel { n in
                try await publishing.publish(RabbitMQEnvelope(type: "jobs.job.requested", data: Job(id: "j-\(n)")))
            }
        }
        try await Self.expectNothingLost(log, queue: queue.workQueue, extra: " (retry worker)")
        try await publishing.delete()
        try await publisher.close()
    }

    @Test func rpcServerAnswersTheRequestsInHandAndLosesNothing() async throws {
        let connection = try await TestBroker.connect()
        let requests = TestBroker.uniqueName("lifecycle-rpc")
        let replies = TestBroker.uniqueName("lifecycle-replies")
        let log = HandlerLog(triggerAt: Self.triggerAt)
        let server = RabbitMQRPCServer(
            connection: connection, queue: requests, configuration: .init(durable: true, concurrency: 20)
        ) { (job: Job) in
            await log.handle(job.id)
            return job
        }
        let publisher = try await TestBroker.connect()
        let channel = try await publisher.openChannel()
        try await channel.queueDeclare(requests, durable: true)
        try await channel.queueDeclare(replies, durable: true)
        try await channel.confirmSelect(maxOutstanding: 256)
        try await Self.runUnderLoad(connection: connection, services: [server], log: log) {
            var confirmations: [RabbitMQConfirmation] = []
            for n in 0..<Self.messageCount {
                let properties = RabbitMQProperties(contentType: "application/json", correlationID: "c-\(n)", replyTo: replies)
                confirmations.append(
                    try await channel.publishWithConfirm(
                        Array(#"{"id":"r-\#(n)"}"#.utf8), routingKey: requests, properties: properties))
            }
            for confirmation in confirmations { #expect(try await confirmation.outcome() == .acked) }
        }
        try await Self.expectNothingLost(log, queue: requests, extra: " (RPC server)")
        // Each request handled was answered exactly once.
        try await eventually("one reply per request handled") {
            Int(try await TestBroker.queueState(replies)?.messageCount ?? 0) == log.handledOnce
        }
        try await channel.queueDelete(requests)
        try await channel.queueDelete(replies)
        try await publisher.close()
    }

    @Test func subscriptionServiceFinishesItsHandlersAndLosesNothing() async throws {
        let connection = try await TestBroker.connect()
        let exchange = TestBroker.uniqueName("lifecycle-events")
        let events = try await RabbitMQTopicExchange.declare(exchange, on: connection, durable: false)
        let audit = try await events.subscribe(
            Job.self, queue: TestBroker.uniqueName("lifecycle-audit"), patterns: ["jobs.#"], prefetch: 20)
        let log = HandlerLog(triggerAt: Self.triggerAt)
        let service = RabbitMQSubscriptionService(subscription: audit) { message in
            await log.handle(message.data.id)
        }
        try await Self.runUnderLoad(connection: connection, services: [service], log: log) {
            let publisher = try await TestBroker.connect()
            let topic = try await RabbitMQTopicExchange.declare(exchange, on: publisher, durable: false)
            try await Self.inParallel { n in
                try await topic.publish(RabbitMQEnvelope(type: "jobs.job.done", data: Job(id: "e-\(n)")))
            }
            try await publisher.close()
        }
        try await Self.expectNothingLost(log, queue: audit.queue, extra: " (subscription)")
        #expect(!audit.channel.isOpen, "the service closes the subscription's channel")
        let cleanup = try await TestBroker.connect()
        let channel = try await cleanup.openChannel()
        try await channel.queueDelete(audit.queue)
        if let deadLetterQueue = audit.deadLetterQueue { try await channel.queueDelete(deadLetterQueue) }
        try await channel.exchangeDelete(exchange)
        try await cleanup.close()
    }

    @Test func rpcClientDrainsItsCallsInFlightAndRefusesNewOnes() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("lifecycle-drain")
        // Declared before the server runs (it declares it too, identically): a call must not
        // race the server's declaration and come back unroutable.
        try await connection.openChannel().queueDeclare(queue, durable: true)
        let release = Gate()
        let received = Gate()
        let server = RabbitMQRPCServer(connection: connection, queue: queue, configuration: .init(durable: true)) {
            (job: Job) in
            received.open()
            await release.wait()
            return job
        }
        let client = RabbitMQRPCClient(connection: connection)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await server.run() }
            defer { tasks.cancelAll() }
            try await testGracefulShutdown { trigger in
                try await withThrowingTaskGroup(of: Job?.self) { calls in
                    calls.addTask {
                        try await client.run()
                        return nil
                    }
                    calls.addTask { try await client.call(Job(id: "slow"), routingKey: queue, as: Job.self) }
                    // Bounded: a server that could not start (its queue refused) fails the test
                    // instead of hanging it.
                    try await withTimeout(.seconds(60), "the server to receive the call") { await received.wait() }
                    trigger.triggerGracefulShutdown()
                    // A new call fails with `closed` once the client is draining (before that
                    // it is unroutable: nobody consumes "nowhere").
                    while true {
                        do {
                            _ = try await client.call(Job(id: "late"), routingKey: TestBroker.uniqueName("nowhere"), as: Job.self)
                            Issue.record("a call to nowhere was answered")
                            break
                        } catch let error as RabbitMQPatternsError where error.code == .closed {
                            break
                        } catch let error as RabbitMQPatternsError where error.code == .unroutable {
                            continue
                        }
                    }
                    #expect(client.callsInFlight == 1)
                    release.open()
                    var answered: [Job] = []
                    for try await result in calls { if let result { answered.append(result) } }
                    #expect(answered == [Job(id: "slow")], "the call in flight got its reply")
                }
            }
        }
        try await connection.openChannel().queueDelete(queue)
        try await connection.close()
    }

    /// A scoped client belongs to its scope, not to the service around it: inside a service
    /// that is already shutting down gracefully, a handler's `withClient` still makes calls.
    @Test func aScopedRPCClientWorksDuringTheEnclosingGracefulShutdown() async throws {
        let connection = try await TestBroker.connect()
        let queue = TestBroker.uniqueName("lifecycle-scoped")
        // Declared before the server runs (it declares it too, identically): the warm-up call
        // must not race the server's declaration and come back unroutable.
        try await connection.openChannel().queueDeclare(queue, durable: true)
        let server = RabbitMQRPCServer(connection: connection, queue: queue, configuration: .init(durable: true)) {
            (job: Job) in job
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await server.run() }
            defer { tasks.cancelAll() }
            // The server is up once a call through it is answered.
            _ = try await RabbitMQRPCClient.withClient(connection: connection) { rpc in
                try await rpc.call(Job(id: "warm-up"), routingKey: queue, as: Job.self)
            }
            try await testGracefulShutdown { trigger in
                trigger.triggerGracefulShutdown()
                // One call after another: a client that drained with the service would have
                // stopped after the first (or refused it).
                let answers = try await RabbitMQRPCClient.withClient(connection: connection) { rpc in
                    var answers: [Job] = []
                    for n in 1...3 {
                        answers.append(try await rpc.call(Job(id: "during-shutdown-\(n)"), routingKey: queue, as: Job.self))
                    }
                    return answers
                }
                #expect(answers == (1...3).map { Job(id: "during-shutdown-\($0)") })
            }
        }
        try await connection.openChannel().queueDelete(queue)
        try await connection.close()
    }

    @Test func withConnectionClosesWhenTheBodyReturnsThrowsOrIsCancelled() async throws {
        let configuration = try TestBroker.configuration()
        let kept = Mutex<[RabbitMQConnection]>([])

        let answer = try await RabbitMQConnection.withConnection(configuration: configuration) { connection in
            kept.withLock { $0.append(connection) }
            return 42
        }
        #expect(answer == 42)

        await #expect(throws: TestSupportError.self) {
            try await RabbitMQConnection.withConnection(uri: TestBroker.url) { connection in
                kept.withLock { $0.append(connection) }
                throw TestSupportError("the body failed")
            }
        }

        let entered = Gate()
        let task = Task {
            try await RabbitMQConnection.withConnection(configuration: configuration) { connection in
                kept.withLock { $0.append(connection) }
                entered.open()
                // Ends only by cancellation.
                for await _ in AsyncStream<Void>.makeStream().stream {}
                try Task.checkCancellation()
            }
        }
        await entered.wait()
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }

        let connections = kept.withLock { $0 }
        #expect(connections.count == 3)
        for connection in connections {
            #expect(!connection.isOpen)
            #expect(connection.closeReason?.code == .closed)
        }
    }

    @Test func connectionServiceThrowsWhenTheConnectionClosesForGood() async throws {
        let name = TestBroker.uniqueName("lifecycle-lost")
        let connection = try await TestBroker.connect(name: name, recovery: .disabled)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                await #expect(throws: RabbitMQError.self) { try await connection.run() }
            }
            try await TestBroker.closeConnection(named: name)
            try await tasks.waitForAll()
        }
        #expect(connection.closeReason?.code != .closed)
    }

    @Test func connectionServiceClosesOnGracefulShutdown() async throws {
        let connection = try await TestBroker.connect()
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await connection.run() }
                // Open and working while it runs.
                _ = try await connection.openChannel()
                trigger.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
        #expect(!connection.isOpen)
        #expect(connection.closeReason?.code == .closed)
    }

    /// Cancelling the connection service (what a `ServiceGroup` does when another service
    /// fails) closes the connection. run() once raced the end of its event stream (which
    /// cancellation also ends) against the shutdown signal, and could return with the
    /// connection open: repeated, bounded, so that a lost race shows.
    @Test func connectionServiceClosesWhenCancelled() async throws {
        for _ in 0..<200 {
            let connection = try await TestBroker.connect()
            let running = Task { try await connection.run() }
            // Opens a channel while run() holds the connection, then cancels it.
            _ = try await connection.openChannel()
            running.cancel()
            try await running.value
            #expect(!connection.isOpen, "run() returned with the connection open")
            if connection.isOpen {
                try await connection.close()
                break
            }
            #expect(connection.closeReason?.code == .closed)
        }
    }
}
