import Foundation
import Logging
import RabbitMQ
import RabbitMQTestSupport
import Testing

// The code samples of the RabbitMQ DocC articles (Sources/RabbitMQ/RabbitMQ.docc), compiled
// here and, where the test broker is enough, run. Each function's body holds its article's
// code blocks verbatim (DocumentationSampleTests in RabbitMQTests checks it); the lines
// around them only hand values in and out. The names are the articles', so each test
// runs in a virtual host of its own (TestBroker.inScratchVirtualHost), so a broker a user
// points the tests at keeps its own entities of those names.

@Suite("Documentation: RabbitMQ articles", .timeLimit(.minutes(5)))
struct CoreDocumentationExampleTests {
    /// Connections.md: the endpoints of a cluster, set by value.
    @Test func endpointsExample() {
        let configuration = endpointsConfiguration()
        #expect(configuration.endpoints.map(\.host) == ["rabbit-1.internal", "rabbit-2.internal", "rabbit-3.internal"])
        #expect(configuration.endpoints.allSatisfy { $0.port == 5672 })
        #expect(configuration.endpointSelection == .shuffled)
        #expect((try? configuration.validate()) != nil)
    }

    /// Connections.md, PublishingAndConfirms.md and ConsumingAndBackPressure.md: declare the
    /// topology, publish an invoice to it, consume it, then the audit queue's consumer.
    @Test func topologyPublishAndConsumeExamples() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            try await topologyExample(connection: connection)
            try await publishExample(connection: connection)
            let handled = Handled()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await consumeExample(connection: connection) { body in handled.append(body) }
                }
                defer { group.cancelAll() }
                try await eventually("the invoice to be handled") { handled.all == [Array(#"{"invoice": 7}"#.utf8)] }
            }

            let channel = try await connection.openChannel()
            try await channel.queueDeclare("invoices.audit", durable: true)
            try await channel.publish("invoice 7 created", routingKey: "invoices.audit")
            try await eventually("the audit entry to be queued") {
                try await channel.queueDeclare("invoices.audit", passive: true).messageCount == 1
            }
            try await cancelAndGetExample(connection: connection)
            #expect(try await channel.queueDeclare("invoices.audit", passive: true).messageCount == 0)
        }
    }

    /// PublishingAndConfirms.md: a stream of confirmed publishes, then a returned one.
    @Test func confirmsAndReturnsExample() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            try await connection.openChannel().queueDeclare("shipments", durable: true)
            let (refused, returned) = try await confirmsExample(connection: connection)
            #expect(refused == 0)
            guard case .returned(let message) = returned else {
                Issue.record("a mandatory message to no queue came back as \(returned)")
                return
            }
            #expect(message.replyCode == 312)
            #expect(try await connection.openChannel().queueDeclare("shipments", passive: true).messageCount == 1_000)
        }
    }

    /// Connections.md: a quorum queue and a stream read from an offset.
    @Test func queueTypesExampleRuns() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            try await queueTypesExample(channel: connection.openChannel())
            // A passive declare fails (404) unless the queue exists.
            _ = try await connection.openChannel().queueDeclare("invoices", passive: true)
        }
    }

    /// RecoveryAndFailover.md: publishing to a server-named queue by its current name.
    @Test func currentNameExampleRuns() async throws {
        let connection = try await TestBroker.connect()
        let name = try await currentNameExample(connection: connection, channel: connection.openChannel())
        #expect(try await connection.openChannel().queueDeclare(name, passive: true).messageCount == 1)
        try await connection.close()
    }

    /// TLSAndAuthentication.md: a token refresh (the test user's own password).
    @Test func updateSecretExampleRuns() async throws {
        let connection = try await TestBroker.connect()
        let update = try await updateSecretExample(connection: connection, token: "guest")
        #expect(update == .applied || update == .nextLogin)
        try await connection.openChannel().queueDeclare("", exclusive: true)
        try await connection.close()
    }

    /// ThreadingModel.md: round trips from a task on the connection's executor. The example
    /// publishes to the default exchange with routing key "orders": the test gives it a queue
    /// of that name for the run, so the confirms are for routed messages.
    @Test func connectionExecutorExampleRuns() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            let channel = try await connection.openChannel()
            try await channel.queueDeclare("orders", durable: true)
            try await connectionExecutorExample(connection: connection)
            #expect(try await channel.queueDeclare("orders", passive: true).messageCount == 3)
        }
    }

    /// TLSAndAuthentication.md: mutual TLS and EXTERNAL login by the client certificate.
    @Test(.enabled(if: TestBroker.hasTLS)) func certificateLoginExampleRuns() async throws {
        try await TestBroker.ensureTLSClientUser()
        let connection = try await connectByCertificate(
            url: TestBroker.tlsURL, ca: TestBroker.tlsFile("ca.pem"), certificate: TestBroker.tlsFile("client.pem"),
            key: TestBroker.tlsFile("client.key"))
        #expect(connection.endpoint?.useTLS == true)
        try await connection.openChannel().queueDeclare("", exclusive: true)
        try await connection.close()
    }

    /// Observability.md: a connection with a logger of the application's.
    @Test func loggerExampleRuns() async throws {
        let connection = try await loggerExample(uri: TestBroker.url)
        #expect(connection.isOpen)
        try await connection.close()
    }
}

/// TLSAndAuthentication.md, "Logging in".
func connectByCertificate(url: String, ca: String, certificate: String, key: String) async throws -> RabbitMQConnection {
    var configuration = try RabbitMQConfiguration(uri: url)  // amqps://broker:5671/
    configuration.tls.caCertificatePath = ca
    configuration.tls.certificatePath = certificate
    configuration.tls.keyPath = key
    configuration.authenticationMechanism = .external  // no password: the certificate is the login
    return try await RabbitMQConnection.connect(configuration: configuration)
}

/// ThreadingModel.md, "The connection's executor".
private func connectionExecutorExample(connection: RabbitMQConnection) async throws {
    let orders = try await connection.openChannel()
    try await orders.confirmSelect()
    try await withTaskExecutorPreference(connection.executor) {
        for order in ["A-1", "A-2", "A-3"] {
            try await orders.publishAndWaitForConfirm(Array(order.utf8), routingKey: "orders")
        }
    }
}

/// RecoveryAndFailover.md, "Settings": compiled, not run (it names addresses that do not
/// exist here).
func recoveryExample() async throws {
    var configuration = try RabbitMQConfiguration(uris: [
        "amqp://app:secret@10.0.0.1:5672/", "amqp://10.0.0.2:5672/", "amqp://10.0.0.3:5672/",
    ])
    configuration.endpointSelection = .shuffled
    configuration.recovery.maxAttempts = 30
    let connection = try await RabbitMQConnection.connect(configuration: configuration)
    for await event in connection.events() {
        // .disconnected(error), .recoveryAttempt(n), .connected(endpoint:), .queueRenamed(from:to:),
        // .recovered(endpoint:), .recoveryFailed(error), .blocked(reason:), .unblocked, .closed(error)
        print(event)
    }
}

/// Connections.md, "URIs": compiled, not run (it logs in as a user the test broker lacks).
func uriConfigurationExample() async throws -> RabbitMQConnection {
    var configuration = try RabbitMQConfiguration(
        uri: "amqp://billing:secret@127.0.0.1:5672/%2f?heartbeat=10&connection_name=billing-worker")
    configuration.requestTimeout = .seconds(10)
    configuration.publishBufferLimit = 4096
    configuration.clientProperties = ["team": "billing"]
    try configuration.validate()
    let connection = try await RabbitMQConnection.connect(configuration: configuration)
    return connection
}

/// Connections.md, "Endpoints".
private func endpointsConfiguration() -> RabbitMQConfiguration {
    var configuration = RabbitMQConfiguration(virtualHost: "orders", username: "app", password: "secret")
    configuration.endpoints = [
        .init(host: "rabbit-1.internal"), .init(host: "rabbit-2.internal"), .init(host: "rabbit-3.internal"),
    ]
    configuration.endpointSelection = .shuffled
    return configuration
}

/// Connections.md, "Channels and topology".
private func topologyExample(connection: RabbitMQConnection) async throws {
    let channel = try await connection.openChannel()
    try await channel.exchangeDeclare("invoicing", type: .topic, durable: true)
    try await channel.queueDeclare(
        "invoices.created", durable: true,
        arguments: ["x-message-ttl": 60_000, "x-max-length": 10_000, "x-overflow": "reject-publish"])
    try await channel.queueBind(queue: "invoices.created", exchange: "invoicing", routingKey: "invoice.created.*")
}

/// Connections.md, "Quorum queues and streams".
private func queueTypesExample(channel: RabbitMQChannel) async throws {
    // Replicated work; a message returned 5 times goes to the dead-letter exchange (here none: dropped).
    try await channel.queueDeclare("invoices", type: .quorum(deliveryLimit: 5))

    // An append-only log trimmed to 1 GB; reading does not remove anything.
    try await channel.queueDeclare("ledger", type: .stream(maxLengthBytes: 1_000_000_000))
    try await channel.confirmSelect()
    for entry in ["opened", "credited", "debited"] {
        try await channel.publishAndWaitForConfirm(Array(entry.utf8), routingKey: "ledger")
    }
    let consumer = try await channel.consume(stream: "ledger", offset: .offset(1), prefetch: 100)
    for try await delivery in consumer {
        print(delivery.streamOffset ?? 0, delivery.bodyString)  // 1 credited, then 2 debited
        try delivery.ack()  // moves the prefetch window; the message stays in the stream
        if delivery.streamOffset == 2 { break }
    }
}

/// PublishingAndConfirms.md, "Fire and forget".
private func publishExample(connection: RabbitMQConnection) async throws {
    let events = try await connection.openChannel()
    try await events.publish(
        #"{"invoice": 7}"#, exchange: "invoicing", routingKey: "invoice.created.eu",
        properties: RabbitMQProperties(
            contentType: "application/json", headers: ["tenant": "acme", "attempt": 1],
            deliveryMode: .persistent, messageID: "invoice-7"))
}

/// PublishingAndConfirms.md, "Confirms" and "Returns".
private func confirmsExample(connection: RabbitMQConnection) async throws -> (refused: Int, returned: RabbitMQPublishOutcome) {
    let shipments = try await connection.openChannel()
    try await shipments.confirmSelect(maxOutstanding: 256)
    var pending: [RabbitMQConfirmation] = []
    for n in 1...1_000 {
        pending.append(try await shipments.publishWithConfirm(Array("shipment \(n)".utf8), routingKey: "shipments"))
    }
    var refused = 0
    for confirmation in pending {
        // Nacked or returned: the application decides whether to publish it again.
        if try await confirmation.outcome() != .acked { refused += 1 }
    }

    let confirmation = try await shipments.publishWithConfirm(
        Array("for nobody".utf8), exchange: "", routingKey: "no-such-queue", mandatory: true)
    if case .returned(let message) = try await confirmation.outcome() {
        print(message.replyCode, message.replyText)  // 312 NO_ROUTE
    }
    return (refused, try await confirmation.outcome())
}

/// ConsumingAndBackPressure.md, "Acknowledgements and prefetch": runs until its task is
/// cancelled.
private func consumeExample(connection: RabbitMQConnection, handle: ([UInt8]) async throws -> Void) async throws {
    let work = try await connection.openChannel()
    try await work.qos(prefetchCount: 50)
    let consumer = try await work.consume(queue: "invoices.created")
    for try await delivery in consumer {
        do {
            try await handle(delivery.body)
            try delivery.ack()
        } catch {
            try delivery.reject(requeue: false)  // dead-lettered if the queue has a dead-letter exchange
        }
    }
}

/// ConsumingAndBackPressure.md, "Ending a consumer": the queue holds one message, so the
/// `get` finds none.
private func cancelAndGetExample(connection: RabbitMQConnection) async throws {
    let work = try await connection.openChannel()
    let audit = try await work.consume(queue: "invoices.audit", consumerTag: "auditor")
    for try await delivery in audit {
        try delivery.ack()
        break  // the consumer keeps running: another loop over `audit` goes on from here
    }
    try await audit.cancel()  // ends the sequence; the broker stops delivering

    if let single = try await work.get(queue: "invoices.audit") {
        try single.ack()
    }
}

/// RecoveryAndFailover.md: a publisher that follows a server-named queue.
private func currentNameExample(connection: RabbitMQConnection, channel: RabbitMQChannel) async throws -> String {
    let replies = try await channel.queueDeclare("")  // amq.gen-..., exclusive
    // ... the connection is lost and recovers: the queue is declared again under a new name.
    try await channel.publish(Array("ping".utf8), routingKey: connection.currentName(ofQueue: replies.name))
    try await eventually("the ping to be queued") {
        try await channel.queueDeclare(replies.name, passive: true).messageCount == 1
    }
    return replies.name
}

/// TLSAndAuthentication.md, "Token refresh".
private func updateSecretExample(connection: RabbitMQConnection, token: String) async throws -> RabbitMQSecretUpdate {
    let update = try await connection.updateSecret(token, reason: "token refreshed")
    if update == .nextLogin {
        // rabbitmq-c 0.11, or a recovery in progress: the broker sees the token at the next login.
    }
    return update
}

/// Observability.md, "Logging".
private func loggerExample(uri: String) async throws -> RabbitMQConnection {
    var logger = Logger(label: "billing.rabbitmq")
    logger.logLevel = .info
    logger[metadataKey: "service"] = "billing"

    var configuration = try RabbitMQConfiguration(uri: uri)
    configuration.logger = logger
    let connection = try await RabbitMQConnection.connect(configuration: configuration)
    return connection
}

/// What the consumer example handed to its handler, read back by the test. An `@unchecked
/// Sendable` class is sound here: `bodies` is only touched while `lock` is held (NSLock, so
/// that ThreadSanitizer sees the locking).
private final class Handled: @unchecked Sendable {
    private let lock = NSLock()
    private var bodies: [[UInt8]] = []

    func append(_ body: [UInt8]) { lock.withLock { bodies.append(body) } }
    var all: [[UInt8]] { lock.withLock { bodies } }
}
