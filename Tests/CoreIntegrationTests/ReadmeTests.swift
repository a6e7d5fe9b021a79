import RabbitMQ
import RabbitMQTestSupport
import Testing

/// The README's quick start, compiled and run against the test broker. Keep the body of
/// `quickStart` identical to the README's code block.
@Suite("README")
struct ReadmeTests {
    @Test func quickStartRuns() async throws {
        let received = try await quickStart(uri: TestBroker.url)
        #expect(received == "hello")
    }
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
