import RabbitMQ
import RabbitMQTestSupport
import Testing

/// The README's quick start (also in GettingStarted.md), compiled and run against the test
/// broker. The body of `quickStart` is the README's code block, verbatim
/// (DocumentationSampleTests in RabbitMQTests checks it).
@Suite("README", .timeLimit(.minutes(2)))
struct ReadmeTests {
    /// The example ends after its first delivery: returning at all means the message it
    /// published was confirmed and consumed.
    @Test func quickStartRuns() async throws {
        try await quickStart(uri: TestBroker.url)
    }
}

private func quickStart(uri: String) async throws {
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
    for try await delivery in try await channel.consume(queue: queue.name) {
        print(delivery.bodyString)
        try delivery.ack()
        break
    }
    try await connection.close()
}
