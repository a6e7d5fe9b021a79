import Foundation
import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

/// Interleavings on everyday paths that a quiet test rarely produces: content arriving while a
/// channel closes, the broker deleting what it auto-deletes, deliveries of a dead connection
/// still buffered, settings recovery must bring back.
@Suite("Interleavings", .timeLimit(.minutes(3)))
struct InterleavingTests {
    /// Content (deliver, header, body frames) that arrives after our channel.close and before
    /// its close-ok is skipped; it never fails the connection.
    @Test func closingAChannelWithDeliveriesInFlightKeepsTheConnection() async throws {
        let connection = try await TestBroker.connect()
        let log = ConnectionEventLog(connection)
        let setup = try await connection.openChannel()
        let queue = try await setup.queueDeclare(TestBroker.uniqueName("in-flight"), durable: true)
        try await setup.confirmSelect()
        let body = [UInt8](repeating: 7, count: 2048)
        for _ in 0..<2_000 { _ = try await setup.publishWithConfirm(body, routingKey: queue.name) }
        _ = try await setup.publishAndWaitForConfirm(body, routingKey: queue.name)

        for round in 0..<5 {
            let consuming = try await connection.openChannel()
            // No prefetch limit: the broker streams the whole queue at once.
            let consumer = try await consuming.consume(queue: queue.name)
            var iterator = consumer.makeAsyncIterator()
            _ = try #require(try await iterator.next(), "round \(round)")
            try await consuming.close()
        }
        // A request on another channel is answered after every frame that came before it.
        let other = try await connection.openChannel()
        let state = try await other.queueDeclare(queue.name, passive: true)
        #expect(state.messageCount == 2_001, "every delivery went back to the queue")
        let lost = log.all.filter { if case .disconnected = $0 { true } else { false } }
        #expect(lost.isEmpty, "the connection failed: \(log.all)")
        try await other.queueDelete(queue.name)
        try await connection.close()
    }

    /// The broker deletes an auto-delete queue when its last consumer goes, including by the
    /// consumer's channel closing; recovery must not declare it again.
    @Test func anAutoDeleteQueueDeletedWithItsChannelIsNotRedeclared() async throws {
        let name = TestBroker.uniqueName("autodelete-close")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let exchange = TestBroker.uniqueName("autodelete-x")
        let queue = TestBroker.uniqueName("autodelete-q")
        let keep = try await connection.openChannel()
        let channel = try await connection.openChannel()
        try await channel.exchangeDeclare(exchange, type: .fanout, autoDelete: true)
        try await channel.queueDeclare(queue, durable: true, autoDelete: true)
        try await channel.queueBind(queue: queue, exchange: exchange)
        _ = try await channel.consume(queue: queue)
        try await channel.close()
        try await eventually("the broker to delete the queue") { try await TestBroker.queueState(queue) == nil }

        try await TestBroker.closeConnection(named: name)
        try await log.recovered()
        #expect(try await TestBroker.queueState(queue) == nil, "recovery declared the deleted queue again")
        // The exchange lost its last binding with the queue: the broker deleted it too.
        let probe = try await connection.openChannel()
        await #expect(throws: RabbitMQError.self) { try await probe.exchangeDeclare(exchange, type: .fanout, passive: true) }
        #expect(keep.isOpen)
        try await connection.close()
    }

    /// A cancel-ok that arrives while the channel is already closing still forgets the queue.
    @Test func anAutoDeleteQueueCancelledJustBeforeItsChannelClosesIsNotRedeclared() async throws {
        let name = TestBroker.uniqueName("autodelete-cancel")
        let proxy = try TestBroker.proxy()
        let connection = try await RabbitMQConnection.connect(configuration: TestBroker.configuration(through: proxy, name: name))
        let log = ConnectionEventLog(connection)
        let queue = TestBroker.uniqueName("autodelete-q")
        let channel = try await connection.openChannel()
        try await channel.queueDeclare(queue, durable: true, autoDelete: true)
        let consumer = try await channel.consume(queue: queue)
        // The broker's answers are held back: its cancel-ok reaches us only after our close left.
        proxy.setMode(.stopWritingToClient)
        let cancelling = Task { try await consumer.cancel() }
        try await eventually("the broker to delete the queue") { try await TestBroker.queueState(queue) == nil }
        // The channel.close (12 bytes of frame around "Goodbye") goes out after the cancel;
        // the broker answers both in order, so the held cancel-ok arrives while closing.
        let sent = proxy.counters.toBroker
        let closing = Task { try await channel.close() }
        try await eventually("the channel.close to reach the broker") { proxy.counters.toBroker > sent }
        proxy.setMode(.passThrough)
        _ = try? await cancelling.value
        _ = try? await closing.value

        try await TestBroker.closeConnection(named: name)
        try await log.recovered()
        #expect(try await TestBroker.queueState(queue) == nil, "recovery declared the deleted queue again")
        try await connection.close()
        proxy.stop()
    }

    /// Deliveries of the dead connection that were buffered but never handed out are
    /// dropped: the broker requeued them, and they come back marked redelivered.
    @Test func deliveriesBufferedBeforeAnOutageAreNotHandedOutTwice() async throws {
        let name = TestBroker.uniqueName("stale-buffer")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("stale-buffer-q"), durable: true)
        try await channel.confirmSelect()
        for index in 0..<10 { _ = try await channel.publishAndWaitForConfirm(Array("m\(index)".utf8), routingKey: queue.name) }
        try await channel.qos(prefetchCount: 10)
        let consumer = try await channel.consume(queue: queue.name)
        // All ten are in the consumer's buffer once the broker reports none ready.
        try await eventually("the ten deliveries to be sent") {
            try await TestBroker.queueState(queue.name)?.messageCount == 0
        }
        let before = log.count
        try await TestBroker.closeConnection(named: name)
        try await log.recovered(after: before)

        var iterator = consumer.makeAsyncIterator()
        var seen: [String: Int] = [:]
        for _ in 0..<10 {
            let delivery = try #require(try await iterator.next())
            #expect(delivery.redelivered, "\(delivery.bodyString) was handed out from the dead connection's buffer")
            seen[delivery.bodyString, default: 0] += 1
            try delivery.ack()
        }
        #expect(seen.count == 10 && seen.values.allSatisfy { $0 == 1 }, "\(seen)")
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    /// Both prefetch settings, per consumer and per channel, come back after recovery.
    @Test func bothPrefetchSettingsSurviveRecovery() async throws {
        // RabbitMQ 4 deprecates global QoS and no longer lists it: there only the per-consumer
        // prefetch is checked.
        let global = ProcessInfo.processInfo.environment["RMQ_VERSION"] != "4"
        let name = TestBroker.uniqueName("qos")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        try await channel.qos(prefetchCount: 7)
        if global { try await channel.qos(prefetchCount: 42, global: true) }
        let expected = global ? ["7\t42"] : ["7"]
        let pid = try await TestBroker.connectionPID(named: name)
        #expect(try await Self.prefetch(connectionPID: pid, global: global) == expected)

        try await TestBroker.closeConnection(named: name)
        try await log.recovered()
        let newPID = try await TestBroker.connectionPID(named: name)
        #expect(try await Self.prefetch(connectionPID: newPID, global: global) == expected)
        try await connection.close()
    }

    /// `prefetch_count` (and `global_prefetch_count`) of the channels of one broker connection.
    static func prefetch(connectionPID pid: String, global: Bool = true) async throws -> [String] {
        let listing =
            global
            ? try await TestBroker.ctl(
                "list_channels", "--no-table-headers", "--silent", "connection", "prefetch_count", "global_prefetch_count")
            : try await TestBroker.ctl("list_channels", "--no-table-headers", "--silent", "connection", "prefetch_count")
        return listing.split(separator: "\n").filter { $0.hasPrefix(pid + "\t") }.map { line in
            line.split(separator: "\t").dropFirst().joined(separator: "\t")
        }
    }

    /// Recovery that cannot get a channel number for its own use ends with a clear error
    /// instead of reconnecting for ever.
    @Test func recoveryWithoutAFreeChannelNumberFailsClearly() async throws {
        let name = TestBroker.uniqueName("no-channel")
        var configuration = try TestBroker.configuration(name: name)
        configuration.channelMax = 2
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let log = ConnectionEventLog(connection)
        let first = try await connection.openChannel()
        _ = try await connection.openChannel()
        try await first.queueDeclare(TestBroker.uniqueName("needs-recovery"), exclusive: true)

        try await TestBroker.closeConnection(named: name)
        let failed = try await log.next("recoveryFailed", timeout: .seconds(60)) {
            if case .recoveryFailed = $0 { true } else { false }
        }
        guard case .recoveryFailed(let error) = failed.event else { return }
        #expect(error.message.contains("channel"), "\(error)")
        #expect(!connection.isOpen)
    }
}
