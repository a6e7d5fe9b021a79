import RabbitMQ
import RabbitMQTestSupport
import Testing

/// The README's quick start, compiled and run against the test broker. Keep the body of
/// `quickStart` identical to the README's code block.
@Suite("README")
struct ReadmeTests {
    @Test func connectionExecutorExampleRuns() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        // The example publishes to the default exchange with routing key "orders": give it a
        // queue of that name for the run, so the confirms are for routed messages.
        try await channel.queueDelete("orders")
        try await channel.queueDeclare("orders", durable: true)
        try await connectionExecutorExample(connection: connection)
        #expect(try await channel.queueDeclare("orders", passive: true).messageCount == 3)
        try await channel.queueDelete("orders")
        try await connection.close()
    }

    @Test func quickStartRuns() async throws {
        let received = try await quickStart(uri: TestBroker.url)
        #expect(received == "hello")
    }

    @Test(.enabled(if: TestBroker.hasTLS)) func certificateLoginExampleRuns() async throws {
        try await TestBroker.ensureTLSClientUser()
        let connection = try await connectByCertificate(
            url: TestBroker.tlsURL, ca: TestBroker.tlsFile("ca.pem"), certificate: TestBroker.tlsFile("client.pem"),
            key: TestBroker.tlsFile("client.key"))
        #expect(connection.endpoint?.useTLS == true)
        try await connection.openChannel().queueDeclare("", exclusive: true)
        try await connection.close()
    }

    /// The names are the README's, so the test deletes them before and after.
    @Test func queueTypesExampleRuns() async throws {
        let connection = try await TestBroker.connect()
        func clean() async throws {
            let channel = try await connection.openChannel()
            for queue in ["invoices", "ledger"] { try await channel.queueDelete(queue) }
            try await channel.close()
        }
        try await clean()
        let read = try await queueTypesExample(channel: connection.openChannel())
        #expect(read == ["credited", "debited"])
        try await clean()
        try await connection.close()
    }
}

/// The README's TLS example: keep it identical to its code block.
private func connectByCertificate(url: String, ca: String, certificate: String, key: String) async throws -> RabbitMQConnection {
    var configuration = try RabbitMQConfiguration(uri: url)  // amqps://broker:5671/
    configuration.tls.caCertificatePath = ca
    configuration.tls.certificatePath = certificate
    configuration.tls.keyPath = key
    configuration.authenticationMechanism = .external  // no password: the certificate is the login
    return try await RabbitMQConnection.connect(configuration: configuration)
}

/// The README's quorum queue and stream example: keep the body identical to its code block,
/// apart from the lines that hand values back to the test.
private func queueTypesExample(channel: RabbitMQChannel) async throws -> [String] {
    var read: [String] = []
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
        read.append(delivery.bodyString)
        try delivery.ack()  // moves the prefetch window; the message stays in the stream
        if delivery.streamOffset == 2 { break }
    }
    return read
}

private func quickStart(uri: String) async throws -> String {
    let connection = try await RabbitMQConnection.connect(uri: uri)
    let channel = try await connection.openChannel()
    let queue = try await channel.queueDeclare("", exclusive: true)

    // Publish with a broker confirmation.
    try await channel.confirmSelect()
    let outcome = try await channel.publishAndWaitForConfirm(
        Array("hello".utf8), routingKey: queue.name,
        properties: RabbitMQProperties(contentType: "text/plain", deliveryMode: .persistent))
    precondition(outcome == .acked)

    // Consume with manual acknowledgements, at most 10 unacknowledged at a time.
    try await channel.qos(prefetchCount: 10)
    var text = ""
    for try await delivery in try await channel.consume(queue: queue.name) {
        text = delivery.bodyString
        try delivery.ack()
        break
    }
    try await connection.close()
    return text
}

/// The README's example of the connection's executor ("Calls from anywhere"): keep the body
/// identical to its code block. Run by `connectionExecutorExampleRuns`.
private func connectionExecutorExample(connection: RabbitMQConnection) async throws {
    let orders = try await connection.openChannel()
    try await orders.confirmSelect()
    try await withTaskExecutorPreference(connection.executor) {
        for order in ["A-1", "A-2", "A-3"] {
            try await orders.publishAndWaitForConfirm(Array(order.utf8), routingKey: "orders")
        }
    }
}

/// The README's recovery example: compiled, not run (it names addresses that do not exist here).
func readmeRecoveryExample() async throws {
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
