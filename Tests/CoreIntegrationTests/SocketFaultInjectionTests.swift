import Foundation
import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

/// Faults at the socket, injected by a ``FaultProxy`` between one connection and the broker:
/// only that connection is affected, so these run alongside the other tests.
@Suite("Socket faults through a proxy", .timeLimit(.minutes(4)))
struct SocketFaultInjectionTests {
    /// Commands whose send fails (the peer reset the connection mid-batch) are never dropped:
    /// every caller gets an answer, an error or a result after recovery.
    @Test func commandsWhoseSendFailsAreAnsweredNeverDropped() async throws {
        let proxy = try TestBroker.proxy()
        // Long heartbeats: a busy broker on a loaded machine must not add losses of its own.
        let connection = try await RabbitMQConnection.connect(configuration: TestBroker.configuration(through: proxy, heartbeat: .seconds(60)))
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = TestBroker.uniqueName("send-failure")
        try await channel.queueDeclare(queue, exclusive: true)

        // Requests large enough (60 KiB of arguments each) that the connection is still writing
        // them when the proxy resets it: some sends fail half-way.
        let padding: RabbitMQFieldTable = ["padding": .bytes([UInt8](repeating: 0x5A, count: 60 * 1024))]
        for round in 0..<4 {
            let before = log.count
            // 64 requests of 60 KiB: 3.8 MB, more than the socket buffers hold, cut after 1 MB.
            proxy.cut(afterBytesToBroker: 1_000_000 + 100_000 * round)
            let answered = Counter()
            let errors = Notes()
            try await withTimeout(.seconds(180), "every request of round \(round) to be answered") {
                await withTaskGroup(of: Void.self) { group in
                    for index in 0..<64 {
                        group.addTask {
                            do {
                                if index % 8 == 0 {
                                    _ = try await connection.openChannel()
                                } else {
                                    _ = try await channel.queueDeclare(queue, passive: true, arguments: padding)
                                }
                            } catch {
                                errors.add("\(error)")
                            }
                            answered.add()
                        }
                    }
                }
            }
            #expect(answered.current == 64)
            #expect(proxy.counters.cut == round + 1, "the connection was reset mid-burst; errors: \(errors.all)")
            try await log.recovered(after: before)
        }
        try await connection.close()
        proxy.stop()
    }

    /// A drop while recovery publishes the unconfirmed messages again loses none of them:
    /// every confirmation resolves, every message reaches the queue, the window is whole again.
    @Test func aDropDuringTheRepublishLosesNothing() async throws {
        let proxy = try TestBroker.proxy()
        let connection = try await RabbitMQConnection.connect(configuration: TestBroker.configuration(through: proxy, heartbeat: .seconds(60)))
        let log = ConnectionEventLog(connection)
        let queue = TestBroker.uniqueName("republish-drop")
        let channel = try await connection.openChannel()
        try await channel.queueDeclare(queue, durable: true)
        let total = 3_000
        try await channel.confirmSelect(maxOutstanding: total)

        // Nothing reaches the broker: every publish stays unconfirmed.
        proxy.setMode(.blackHole)
        var confirmations: [RabbitMQConfirmation] = []
        for index in 0..<total {
            let body = Array(String(format: "%06d", index).utf8) + [UInt8](repeating: 0, count: 200)
            confirmations.append(try await channel.publishWithConfirm(body, routingKey: queue))
        }
        // Reset, and reset again in the middle of the republish on the next connection: the
        // cut is armed first (nothing passes the black hole, so it counts the new connection's
        // bytes only: its handshake, then 150 kB into the 750 kB republish).
        proxy.cut(afterBytesToBroker: 150_000)
        proxy.cutAll(.reset)
        proxy.setMode(.passThrough)
        try await log.next("disconnected") { if case .disconnected = $0 { true } else { false } }
        try await log.recovered()

        let all = confirmations
        let outcomes = try await withTimeout(.seconds(120), "every confirmation to resolve") {
            var outcomes: [RabbitMQPublishOutcome] = []
            for confirmation in all { outcomes.append(try await confirmation.outcome()) }
            return outcomes
        }
        #expect(outcomes.allSatisfy { $0 == .acked })
        #expect(proxy.counters.cut >= 2, "the republish was cut: \(proxy.counters)")
        // The I/O thread gives the slots back right after it resolved the confirmations.
        try await eventually("the confirm window to be whole again") { channel.shared.outstandingConfirms == 0 }
        // The broker's account: every message is there (some maybe twice).
        let observer = try await TestBroker.connect()
        let drain = try await observer.openChannel()
        var seen = Set<Int>()
        while let delivery = try await drain.get(queue: queue, autoAck: true) {
            seen.insert(Int(String(decoding: delivery.body.prefix(6), as: UTF8.self))!)
        }
        let missing = Set(0..<total).subtracting(seen)
        #expect(missing.isEmpty, "lost: \(missing.sorted().prefix(20))")
        try await drain.queueDelete(queue)
        try await observer.close()
        try await connection.close()
        proxy.stop()
    }

    /// A consume whose consume-ok never came before the drop fails, and recovery does not
    /// bring that consumer back.
    @Test func aConsumeInFlightWhenTheConnectionDropsIsNotRecovered() async throws {
        let proxy = try TestBroker.proxy()
        // Replies are held back for a while: heartbeats too, so long ones.
        let connection = try await RabbitMQConnection.connect(configuration: TestBroker.configuration(through: proxy, heartbeat: .seconds(60)))
        let log = ConnectionEventLog(connection)
        let queue = TestBroker.uniqueName("consume-in-flight")
        let channel = try await connection.openChannel()
        try await channel.queueDeclare(queue, durable: true)

        // The broker gets the consume; its consume-ok is held back, then the connection drops.
        proxy.setMode(.stopWritingToClient)
        let consuming = Task { try await channel.consume(queue: queue) }
        try await eventually("the broker to register the consumer") { try await TestBroker.queueState(queue)?.consumerCount == 1 }
        // Cut first: in pass-through, the held replies would reach the client before the cut.
        proxy.cutAll(.reset)
        proxy.setMode(.passThrough)
        await #expect(throws: RabbitMQError.self) { _ = try await consuming.value }
        try await log.recovered()
        #expect(try await TestBroker.queueState(queue)?.consumerCount == 0, "recovery registered a consumer nobody owns")

        // And a cancel in flight: the consumer stays cancelled.
        let consumer = try await channel.consume(queue: queue)
        #expect(try await TestBroker.queueState(queue)?.consumerCount == 1)
        proxy.setMode(.stopWritingToClient)
        let cancelling = Task { try await consumer.cancel() }
        try await eventually("the broker to cancel the consumer") { try await TestBroker.queueState(queue)?.consumerCount == 0 }
        let before = log.count
        // Cut first: in pass-through, the held replies would reach the client before the cut.
        proxy.cutAll(.reset)
        proxy.setMode(.passThrough)
        _ = try? await cancelling.value
        try await log.recovered(after: before)
        #expect(try await TestBroker.queueState(queue)?.consumerCount == 0, "recovery registered a cancelled consumer")
        try await channel.queueDelete(queue)
        try await connection.close()
        proxy.stop()
    }

    /// A broker that stops reading (as under a memory alarm) while it keeps sending: the I/O
    /// thread must not freeze in a send. Frames keep being read and `close()` ends.
    @Test func aPeerThatStopsReadingFreezesNeitherReadingNorClose() async throws {
        let proxy = try TestBroker.proxy()
        var configuration = try TestBroker.configuration(through: proxy, heartbeat: .seconds(60), recovery: .disabled)
        configuration.closeTimeout = .seconds(2)
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let queue = TestBroker.uniqueName("stop-reading")
        let channel = try await connection.openChannel()
        try await channel.queueDeclare(queue, exclusive: true)
        let consumer = try await channel.consume(queue: queue, autoAck: true)
        let publisher = try await connection.openChannel()

        proxy.setMode(.stopReadingFromClient)
        // Publish until the socket and every buffer are full and the publisher waits.
        let body = [UInt8](repeating: 1, count: 64 * 1024)
        let published = Counter()
        let publishing = Task {
            while !Task.isCancelled {
                try await publisher.publish(body, routingKey: TestBroker.uniqueName("nowhere"))
                published.add()
            }
        }
        try await eventually(timeout: .seconds(60), "the publisher to be held up") {
            let before = published.current
            try await Task.sleep(for: .milliseconds(500))
            return before > 0 && published.current == before
        }
        // Frames from the broker are still read: a message from another connection arrives.
        let other = try await TestBroker.connect()
        try await other.openChannel().publish("still reading", routingKey: queue)
        let delivery = try await withTimeout(.seconds(30), "a delivery while the writer is stuck") {
            var deliveries = consumer.makeAsyncIterator()
            return try await deliveries.next()?.bodyString
        }
        #expect(delivery == "still reading")
        try await other.close()

        // close() ends by its deadline, although nothing more can be written.
        publishing.cancel()
        try await withTimeout(.seconds(60), "close() while the peer does not read") { try await connection.close() }
        #expect(!connection.isOpen)
        _ = await publishing.result
        proxy.stop()
    }

    /// Waits for a confirm slot and for a confirmation end as soon as their task is cancelled.
    @Test func waitsForConfirmsEndWhenTheirTaskIsCancelled() async throws {
        let proxy = try TestBroker.proxy()
        let connection = try await RabbitMQConnection.connect(
            configuration: TestBroker.configuration(through: proxy, heartbeat: .seconds(60), recovery: .disabled))
        let channel = try await connection.openChannel()
        try await channel.confirmSelect(maxOutstanding: 1)
        proxy.setMode(.blackHole)
        let first = try await channel.publishWithConfirm(Array("first".utf8), routingKey: TestBroker.uniqueName("q"))

        let waiting = Task { try await first.outcome() }
        let reserving = Task { try await channel.publishWithConfirm(Array("second".utf8), routingKey: "q") }
        waiting.cancel()
        reserving.cancel()
        try await withTimeout(.seconds(30), "the cancelled waits to end") {
            await #expect(throws: CancellationError.self) { _ = try await waiting.value }
            await #expect(throws: CancellationError.self) { _ = try await reserving.value }
        }
        proxy.setMode(.passThrough)
        #expect(try await first.outcome() == .acked, "the confirmation itself is still delivered")
        try await connection.close()
        proxy.stop()
    }

    /// A publisher waiting for room in a full publish buffer ends when its task is cancelled.
    @Test func aPublisherWaitingForRoomEndsWhenItsTaskIsCancelled() async throws {
        let proxy = try TestBroker.proxy()
        var configuration = try TestBroker.configuration(through: proxy, heartbeat: .seconds(60), recovery: .disabled)
        configuration.publishBufferLimit = 4
        configuration.closeTimeout = .seconds(1)
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let channel = try await connection.openChannel()
        proxy.setMode(.stopReadingFromClient)
        let body = [UInt8](repeating: 2, count: 64 * 1024)
        let published = Counter()
        let publishing = Task {
            while true {
                try await channel.publish(body, routingKey: "nowhere")
                published.add()
            }
        }
        try await eventually(timeout: .seconds(60), "the publisher to wait for room") {
            let before = published.current
            try await Task.sleep(for: .milliseconds(500))
            return before > 0 && published.current == before
        }
        publishing.cancel()
        try await withTimeout(.seconds(30), "the cancelled publisher to end") {
            await #expect(throws: CancellationError.self) { try await publishing.value }
        }
        try await withTimeout(.seconds(60), "close()") { try await connection.close() }
        proxy.stop()
    }
}
