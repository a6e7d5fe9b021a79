import Foundation
import Logging
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// Failover across the nodes of a three-node cluster (scripts/cluster.sh).
@Suite("FaultTests: cluster failover", .serialized, .timeLimit(.minutes(6)))
struct ClusterFailoverTests {
    @Test func killingTheConnectedNodeFailsOverWithoutLosingConfirmedMessages() async throws {
        let total = 5_000
        let urls = try TestCluster.urls
        func configuration(_ name: String) throws -> RabbitMQConfiguration {
            var configuration = try RabbitMQConfiguration(uris: urls)
            configuration.connectionName = TestBroker.uniqueName(name)
            configuration.heartbeat = .seconds(5)
            configuration.recovery = TestBroker.fastRecovery
            configuration.endpointSelection = .inOrder
            return configuration
        }
        let publisherConnection = try await RabbitMQConnection.connect(configuration: configuration("cluster-pub"))
        let consumerConnection = try await RabbitMQConnection.connect(configuration: configuration("cluster-con"))
        #expect(publisherConnection.endpoint?.port == 5801, "connected to node 1 first")
        let publisherEvents = ConnectionEventLog(publisherConnection)
        let consumerEvents = ConnectionEventLog(consumerConnection)

        let queue = TestBroker.uniqueName("cluster-quorum")
        let publisher = try await publisherConnection.openChannel()
        try await publisher.queueDeclare(queue, durable: true, arguments: ["x-queue-type": "quorum"])
        try await publisher.confirmSelect(maxOutstanding: 500)

        let (consumed, consuming) = try await ConsumptionLog.consume(
            queue, on: consumerConnection, prefetch: 200, until: total)
        let published = Counter()
        let publishing = Task {
            var channel = publisher
            var confirmed: Set<String> = []
            var republished: Set<String> = []
            var nacks = 0
            var consecutiveNacks = 0
            var reopened = 0
            var index = 0
            while index < total {
                let id = "\(index)"
                let confirmation = try await channel.publishWithConfirm(
                    Array("m\(index)".utf8), routingKey: queue, properties: .init(deliveryMode: .persistent, messageID: id))
                let outcome = try await confirmation.outcome()
                if confirmation.wasRepublished { republished.insert(id) }
                guard outcome == .acked else {
                    // A quorum queue nacks while it elects a new leader: publish again. RabbitMQ
                    // 3.10 can leave a channel that published during the election nacking for
                    // good; a fresh channel on the same (recovered) connection is acked.
                    nacks += 1
                    consecutiveNacks += 1
                    if consecutiveNacks % 20 == 0 {
                        try? await channel.close()
                        channel = try await publisherConnection.openChannel()
                        try await channel.confirmSelect(maxOutstanding: 500)
                        reopened += 1
                    } else {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    continue
                }
                consecutiveNacks = 0
                confirmed.insert(id)
                index += 1
                published.set(index)
            }
            print("fault b: \(nacks) nacks during the failover, publisher channel reopened \(reopened) times")
            return (confirmed, republished)
        }

        let reporter = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(5))
                print("fault b progress: confirmed \(published.value), consumed \(consumed.distinct)")
            }
        }
        defer { reporter.cancel() }
        try await eventually(timeout: .seconds(120), "1,000 messages consumed before the kill") { consumed.distinct >= 1_000 }
        try await TestCluster.control("kill-node", "1")
        let killed = ContinuousClock.now
        let publisherRecovered = try await publisherEvents.recovered("publisher failover")
        let consumerRecovered = try await consumerEvents.recovered("consumer failover")
        let (confirmed, republished) = try await publishing.value
        try await consuming.value

        #expect(publisherConnection.endpoint?.port != 5801, "failed over to another node")
        #expect(consumerConnection.endpoint?.port != 5801)
        let records = consumed.snapshot
        let lost = confirmed.filter { records[$0] == nil }
        #expect(confirmed.count == total)
        #expect(lost.isEmpty, "confirmed but never consumed: \(lost.count)")
        let duplicates = records.filter { $0.value.count > 1 }
        print("""
            fault b: published \(total), confirmed \(confirmed.count), re-published \(republished.count), \
            consumed \(records.count) distinct, duplicated \(duplicates.count); node-kill to publisher failover \
            \((publisherRecovered.at - killed).milliseconds) ms, to consumer failover \((consumerRecovered.at - killed).milliseconds) ms \
            (publisher now on \(publisherConnection.endpoint.map(\.description) ?? "?"))
            """)

        try await publisherConnection.openChannel().queueDelete(queue)
        try await publisherConnection.close()
        try await consumerConnection.close()
        try await TestCluster.control("start-node", "1")
    }
}
