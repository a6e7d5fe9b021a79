import Foundation
import Logging
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// Failover across the nodes of a three-node cluster (scripts/cluster.sh).
@Suite("FaultTests: cluster failover", .serialized, .timeLimit(.minutes(6)))
struct ClusterFailoverTests {
    /// Over plain TCP, and over TLS (every node's certificate from the same test CA).
    @Test(arguments: [false, true])
    func killingTheConnectedNodeFailsOverWithoutLosingConfirmedMessages(overTLS: Bool) async throws {
        let urls = try overTLS ? TestCluster.tlsURLs : TestCluster.urls
        @Sendable func configuration(_ name: String) throws -> RabbitMQConfiguration {
            var configuration = try RabbitMQConfiguration(uris: urls)
            configuration.connectionName = TestBroker.uniqueName(name)
            configuration.heartbeat = .seconds(5)
            configuration.recovery = TestBroker.fastRecovery
            configuration.endpointSelection = .inOrder
            return configuration
        }
        let publisherConnection = try await RabbitMQConnection.connect(configuration: configuration("cluster-pub"))
        let consumerConnection = try await RabbitMQConnection.connect(configuration: configuration("cluster-con"))
        let firstNode = try #require(try RabbitMQConfiguration(uris: urls).endpoints.first)
        #expect(publisherConnection.endpoint == firstNode, "connected to node 1 first")
        let publisherEvents = ConnectionEventLog(publisherConnection)
        let consumerEvents = ConnectionEventLog(consumerConnection)

        let queue = TestBroker.uniqueName("cluster-quorum")
        let setup = try await publisherConnection.openChannel()
        try await setup.queueDeclare(queue, durable: true, arguments: ["x-queue-type": "quorum"])

        let workload = FaultWorkload(.init(queue: queue, routingKey: queue, afterFault: 2_000))
        let publishing = Task { try await workload.publish(on: publisherConnection) }
        let consuming = Task { try await workload.consume(on: consumerConnection) }
        try await workload.waitUntilInFlight(after: 1_000)
        workload.markFault()
        let (publisherBefore, consumerBefore) = (publisherEvents.count, consumerEvents.count)
        try await TestCluster.control("kill-node", "1")
        // Timed from each connection's own loss: the kill command returns only once the
        // node's process is gone, and a client can notice the reset before that.
        let isLoss: @Sendable (RabbitMQConnectionEvent) -> Bool = { if case .disconnected = $0 { true } else { false } }
        let publisherLost = try await publisherEvents.next("publisher loss", after: publisherBefore, where: isLoss)
        let consumerLost = try await consumerEvents.next("consumer loss", after: consumerBefore, where: isLoss)
        let publisherRecovered = try await publisherEvents.recovered("publisher failover", after: publisherBefore)
        let consumerRecovered = try await consumerEvents.recovered("consumer failover", after: consumerBefore)
        try await withTimeout(.seconds(180), "the publisher to finish") { try await publishing.value }

        #expect(publisherConnection.endpoint != firstNode, "failed over to another node")
        #expect(consumerConnection.endpoint != firstNode)
        #expect(publisherConnection.endpoint?.useTLS == overTLS && consumerConnection.endpoint?.useTLS == overTLS)
        let report = try await workload.verify {
            var configuration = try configuration("cluster-drain")
            configuration.recovery = .disabled
            return try await RabbitMQConnection.connect(configuration: configuration)
        }
        consuming.cancel()
        _ = await consuming.result
        print("""
            fault b\(overTLS ? " (TLS)" : ""): \(report); loss to failover complete: publisher \((publisherRecovered.at - publisherLost.at).milliseconds) ms, \
            consumer \((consumerRecovered.at - consumerLost.at).milliseconds) ms \
            (publisher now on \(publisherConnection.endpoint.map(\.description) ?? "?"))
            """)

        try await publisherConnection.openChannel().queueDelete(queue)
        try await publisherConnection.close()
        try await consumerConnection.close()
        try await TestCluster.control("start-node", "1")
    }
}
