import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// RabbitMQ 4 with what 4.3 denies by default (`RMQ_VERSION=4 scripts/broker.sh`): a request
/// that uses a denied feature reaches its caller as a typed error naming the feature. The
/// broker closes the whole connection for it, which recovers without that request.
@Suite(
    "Deprecated features a RabbitMQ 4 broker denies", .timeLimit(.minutes(3)),
    .enabled(if: ProcessInfo.processInfo.environment["RMQ_VERSION"] == "4", "needs the RabbitMQ 4 node"))
struct DeprecatedFeatureTests {
    /// Defect (seen on RabbitMQ 4.0 with 4.3's defaults): the refusal was reported as "the
    /// connection was lost and is recovering", a retriable error for what can never succeed.
    @Test func aDeniedFeatureFailsItsRequestWithATypedErrorAndTheConnectionRecovers() async throws {
        let connection = try await TestBroker.connect(name: TestBroker.uniqueName("deprecated"))
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let transient = TestBroker.uniqueName("transient")
        let error = await #expect(throws: RabbitMQError.self) {
            _ = try await channel.queueDeclare(transient, durable: false, exclusive: false)
        }
        #expect(error?.code == .deprecatedFeature, "\(String(describing: error))")
        #expect(error?.deprecatedFeature == "transient_nonexcl_queues")
        #expect(error?.isRetriable == false)
        try await log.recovered()

        // What the broker permits still works on the recovered connection, and the refused
        // queue was never declared.
        let durable = TestBroker.uniqueName("durable")
        _ = try await channel.queueDeclare(durable, durable: true)
        _ = try await channel.queueDeclare("", exclusive: true)
        #expect(try await TestBroker.queueState(transient) == nil)

        // RabbitMQ 4.0.5 lists global_qos as denied but still accepts it; where it is refused,
        // the refusal must be typed the same way.
        let before = log.count
        do {
            try await channel.qos(prefetchCount: 10, global: true)
        } catch let error as RabbitMQError {
            #expect(error.code == .deprecatedFeature, "\(error)")
            #expect(error.deprecatedFeature == "global_qos")
            try await log.recovered("recovered again", after: before)
        }
        try await channel.qos(prefetchCount: 10)
        try await channel.queueDelete(durable)
        try await connection.close()
    }
}
