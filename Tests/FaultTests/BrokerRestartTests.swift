import Foundation
import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

/// Faults of the whole broker: run on their own, after every other test (scripts/test.sh).
@Suite("FaultTests: broker kill, pause", .serialized, .timeLimit(.minutes(6)))
struct BrokerRestartTests {
    @Test func killedAndRestartedBrokerLosesNoConfirmedMessage() async throws {
        let total = 20_000
        let queue = TestBroker.uniqueName("fault-durable")
        let exchange = TestBroker.uniqueName("fault-transient-x")
        let publisherConnection = try await TestBroker.connect(name: TestBroker.uniqueName("fault-pub"), heartbeat: .seconds(5))
        let consumerConnection = try await TestBroker.connect(name: TestBroker.uniqueName("fault-con"), heartbeat: .seconds(5))
        let publisherEvents = ConnectionEventLog(publisherConnection)
        let consumerEvents = ConnectionEventLog(consumerConnection)

        let publisher = try await publisherConnection.openChannel()
        try await publisher.queueDeclare(queue, durable: true)
        // A transient exchange and binding die with the broker: recovery must re-create them,
        // or the mandatory publishes below come back as returned.
        try await publisher.exchangeDeclare(exchange, type: .fanout)
        try await publisher.queueBind(queue: queue, exchange: exchange)
        try await publisher.confirmSelect(maxOutstanding: 1_000)

        let (consumed, consuming) = try await ConsumptionLog.consume(
            queue, on: consumerConnection, prefetch: 500, until: total)

        let progress = Counter()
        let publishing = Task {
            var confirmations: [(String, RabbitMQConfirmation)] = []
            confirmations.reserveCapacity(total)
            for index in 0..<total {
                let id = "\(index)"
                let properties = RabbitMQProperties(deliveryMode: .persistent, messageID: id)
                confirmations.append(
                    (id, try await publisher.publishWithConfirm(
                        Array("payload \(index)".utf8), exchange: exchange, routingKey: "", properties: properties,
                        mandatory: true)))
                progress.set(index + 1)
            }
            var confirmed: Set<String> = []
            var republished: Set<String> = []
            var other: [String] = []
            for (id, confirmation) in confirmations {
                let outcome = try await confirmation.outcome()
                if outcome == .acked { confirmed.insert(id) } else { other.append("\(id): \(outcome)") }
                if confirmation.wasRepublished { republished.insert(id) }
            }
            return (confirmed, republished, other)
        }

        let reporter = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(5))
                print("fault a progress: published \(progress.value), consumed \(consumed.distinct)")
            }
        }
        defer { reporter.cancel() }
        try await eventually(timeout: .seconds(120), "5,000 messages consumed before the kill") { consumed.distinct >= 5_000 }
        try await brokerControl("kill")
        let killed = ContinuousClock.now
        print("fault a: broker killed")
        // "Back" is when the broker accepts connections again (it listens only once booted),
        // not when the start script returns.
        let port = try #require(URL(string: try TestBroker.url)?.port)
        // A killed multi-threaded VM keeps its listening socket until its last thread is gone.
        try await eventually(timeout: .seconds(60), "the killed broker to stop listening") { !acceptsConnections(port: port) }
        let starting = Task { try await brokerControl("start") }
        try await eventually(timeout: .seconds(120), "the broker to listen again") { acceptsConnections(port: port) }
        let back = ContinuousClock.now
        _ = try await starting.value
        print("fault a: broker back")

        let (confirmed, republished, other) = try await publishing.value
        try await consuming.value
        let consumerRecovered = try await consumerEvents.recovered("consumer recovered")
        try await publisherEvents.recovered("publisher recovered")

        #expect(other.isEmpty, "every publish acked: \(other.prefix(5))")
        #expect(confirmed.count == total)
        let records = consumed.snapshot
        let lost = confirmed.filter { records[$0] == nil }
        #expect(lost.isEmpty, "confirmed but never consumed: \(lost.count)")
        let duplicates = records.filter { $0.value.count > 1 }
        let unexplained = duplicates.filter { !$0.value.redelivered && !republished.contains($0.key) }
        #expect(unexplained.isEmpty, "duplicates neither redelivered nor re-published: \(unexplained.keys.prefix(5))")
        let resumed = consumed.firstArrival(after: back)
        let deliveries = records.values.reduce(0) { $0 + $1.count }
        let firstDelivery = resumed.map { "\(($0 - back).milliseconds) ms" } ?? "n/a"
        print("""
            fault a: published \(total), confirmed \(confirmed.count), re-published \(republished.count), \
            consumed \(records.count) distinct / \(deliveries) deliveries, \
            duplicated \(duplicates.count); broker down \((back - killed).milliseconds) ms (kill to ready); \
            broker-back to consumer-recovered \((consumerRecovered.at - back).milliseconds) ms; \
            broker-back to first delivery \(firstDelivery)
            """)

        try await publisher.queueDelete(queue)
        try await publisher.exchangeDelete(exchange)
        try await publisherConnection.close()
        try await consumerConnection.close()
    }

    @Test func aConsumerWaitsForItsQueueToBeRedeclaredByAnotherConnection() async throws {
        // The queue is transient, so the restarted broker has lost it; only the owner's
        // recovery declares it again, and the owner is made to recover seconds after the
        // consumer's connection, which must wait for the queue instead of failing with 404.
        // The broker is down for about 6 s; the owner's first attempt comes after 15 s, long
        // after the reader's (0.1-2 s back-off), and within the reader's wait (2 x heartbeat).
        var slow = TestBroker.fastRecovery
        slow.initialDelay = .seconds(15)
        slow.maxDelay = .seconds(15)
        slow.jitter = 0
        let owner = try await TestBroker.connect(name: TestBroker.uniqueName("fault-owner"), recovery: slow)
        let consuming = try await TestBroker.connect(name: TestBroker.uniqueName("fault-reader"))
        let ownerEvents = ConnectionEventLog(owner)
        let readerEvents = ConnectionEventLog(consuming)
        let queue = TestBroker.uniqueName("fault-transient-q")
        try await owner.openChannel().queueDeclare(queue)
        let consumer = try await consuming.openChannel().consume(queue: queue)
        var iterator = consumer.makeAsyncIterator()

        try await brokerControl("kill")
        try await brokerControl("start")
        try await readerEvents.recovered("reader recovered")
        try await ownerEvents.recovered("owner recovered")
        #expect(!readerEvents.all.contains { if case .topologyRecoveryFailed = $0 { true } else { false } })

        try await owner.openChannel().publish("after the restart", routingKey: queue)
        let delivery = try #require(try await iterator.next())
        #expect(delivery.bodyString == "after the restart")
        try delivery.ack()
        try await owner.openChannel().queueDelete(queue)
        try await owner.close()
        try await consuming.close()
    }

    @Test func pausedBrokerIsDetectedAndRecoveredWithItsConsumers() async throws {
        let connection = try await TestBroker.connect(name: TestBroker.uniqueName("fault-pause"), heartbeat: .seconds(2))
        let events = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("pause-q"))
        let consumer = try await channel.consume(queue: queue.name)
        var iterator = consumer.makeAsyncIterator()

        let pid = try await TestBroker.brokerPID()
        try #require(kill(pid, SIGSTOP) == 0)
        do {
            try await events.next("the heartbeat loss", timeout: .seconds(60)) {
                if case .disconnected(let error) = $0 { error.code == .heartbeatTimeout } else { false }
            }
            // Keep it paused a little longer: reconnection attempts time out meanwhile.
            try await events.next("a failed reconnection attempt", timeout: .seconds(60)) {
                if case .recoveryAttempt(let n) = $0 { n >= 2 } else { false }
            }
        } catch {
            kill(pid, SIGCONT)
            throw error
        }
        #expect(kill(pid, SIGCONT) == 0)
        let resumed = ContinuousClock.now
        let recovered = try await events.recovered()

        let publisher = try await TestBroker.connect()
        try await publisher.openChannel().publish("after the pause", routingKey: queue.name)
        let delivery = try #require(try await iterator.next())
        #expect(delivery.bodyString == "after the pause")
        try delivery.ack()
        let thread = connection.core.threadName
        let named = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task"))?.filter { task in
            let name = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
            return name.trimmingCharacters(in: .whitespacesAndNewlines) == thread
        }
        #expect(named?.count == 1, "one I/O thread for the connection, none left stuck")
        print("fault d: SIGCONT to recovered \((recovered.at - resumed).milliseconds) ms")
        try await channel.queueDelete(queue.name)
        try await publisher.close()
        try await connection.close()
    }
}
