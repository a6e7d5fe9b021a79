import Foundation
import MetricsTestKit
import RabbitMQTestSupport
import Testing

@testable import RabbitMQ

/// Tests that change the whole broker (alarms, a paused VM), or that measure the whole test
/// process. `scripts/test.sh` runs them on their own, after everything else, so they cannot
/// disturb other tests or be disturbed by them.
@Suite("Broker-wide faults", .serialized, .timeLimit(.minutes(6)))
struct BrokerWideTests {
    @Test func memoryAlarmBlocksAndUnblocksPublishing() async throws {
        let metrics = TestMetrics()
        var configuration = try TestBroker.configuration()
        configuration.metricsFactory = metrics
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let events = connection.events()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("alarm"), durable: true)

        try await TestBroker.ctl("set_vm_memory_high_watermark", "0.0000001")
        do {
            // RabbitMQ blocks a connection when it publishes during an alarm.
            try await channel.publish("held while blocked", routingKey: queue.name)
            let blocked = try await withTimeout(.seconds(60), "connection.blocked") {
                for await event in events { if case .blocked(let reason) = event { return reason } }
                return "stream ended"
            }
            #expect(blocked.contains("memory"), "reason: \(blocked)")
            // Publishes made while blocked wait in the publish buffer, and its gauge says so.
            for _ in 0..<5 { try await channel.publish("held too", routingKey: queue.name) }
            let buffered = try metrics.expectMeter(RabbitMQMetrics.publishBuffered, [("connection", connection.name)])
            try await eventually("the publish-buffer gauge to count the held publishes") { buffered.lastValue == 5 }
            // While blocked, nothing of ours reached the queue.
            let observer = try await TestBroker.connect()
            let observerChannel = try await observer.openChannel()
            #expect(try await observerChannel.queueDeclare(queue.name, passive: true).messageCount == 0)

            try await TestBroker.ctl("set_vm_memory_high_watermark", "0.4")
            let unblocked = try await withTimeout(.seconds(60), "connection.unblocked") {
                for await event in events { if case .unblocked = event { return true } }
                return false
            }
            #expect(unblocked)
            // The blocked time is recorded before the event is seen.
            let blockedFor = try metrics.expectTimer(RabbitMQMetrics.blockedDuration, [("connection", connection.name)]).values
            #expect(blockedFor.count == 1 && blockedFor[0] > 0, "\(blockedFor)")
            // The held publishes go out once unblocked, and the buffer empties.
            try await eventually("the held messages to arrive") {
                try await observerChannel.queueDeclare(queue.name, passive: true).messageCount == 6
            }
            try await eventually("the publish-buffer gauge to empty") { buffered.lastValue == 0 }
            try await observerChannel.queueDelete(queue.name)
            try await observer.close()
        } catch {
            _ = try? await TestBroker.ctl("set_vm_memory_high_watermark", "0.4")
            throw error
        }
        try await connection.close()
    }

    @Test func pausedBrokerIsDetectedByHeartbeatWithoutAStuckThread() async throws {
        let connection = try await TestBroker.connect(heartbeat: .seconds(2), recovery: .disabled)
        #expect(connection.negotiatedHeartbeat == 2)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let consumer = try await channel.consume(queue: queue.name)
        let consuming = Task { for try await _ in consumer {} }
        let events = connection.events()

        let pid = try await TestBroker.brokerPID()
        try #require(kill(pid, SIGSTOP) == 0)
        do {
            let error = try await withTimeout(.seconds(60), "the heartbeat timeout") {
                do {
                    try await consuming.value
                    return RabbitMQError(code: .closed, message: "consumer ended without an error")
                } catch let error as RabbitMQError {
                    return error
                }
            }
            #expect(error.code == .heartbeatTimeout)
            #expect(error.scope == .connection)
            var closed: RabbitMQError?? = nil
            for await event in events { if case .closed(let reason) = event { closed = reason } }
            #expect(closed??.code == .heartbeatTimeout)
            #expect(!connection.isOpen)
            // The I/O thread did not stay blocked in a send or a read: it has exited.
            let thread = connection.core.threadName
            try await eventually("the I/O thread to exit") { !ioThreadNames().contains(thread) }
        } catch {
            kill(pid, SIGCONT)
            throw error
        }
        #expect(kill(pid, SIGCONT) == 0)
        // The broker is fine afterwards.
        let again = try await TestBroker.connect()
        try await again.openChannel().queueDeclare("", exclusive: true)
        try await again.close()
    }

    @Test func publisherStuckInASendToAPausedBrokerIsFreed() async throws {
        // rabbitmq-c 0.11 blocks forever in amqp_basic_publish once the socket buffer is full
        // and the peer is silent (upstream #780); the watchdog must shut the socket down.
        let connection = try await TestBroker.connect(heartbeat: .seconds(2), recovery: .disabled)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true, arguments: ["x-max-length": 10])
        let body = [UInt8](repeating: 7, count: 64 * 1024)
        let pid = try await TestBroker.brokerPID()
        try #require(kill(pid, SIGSTOP) == 0)
        do {
            let publishing = Task {
                // Bounded: 50,000 × 64 KiB is far more than any socket buffer holds.
                for _ in 0..<50_000 { try await channel.publish(body, routingKey: queue.name) }
            }
            let error = try await withTimeout(.seconds(90), "the stuck publisher to be freed") {
                do {
                    try await publishing.value
                    return RabbitMQError(code: .closed, message: "all publishes went through a paused broker")
                } catch let error as RabbitMQError {
                    return error
                }
            }
            #expect(error.scope == .connection, "\(error)")
            #expect(error.code != .closed, "\(error)")
            #expect(!connection.isOpen)
            let thread = connection.core.threadName
            try await eventually("the I/O thread to exit") { !ioThreadNames().contains(thread) }
        } catch {
            kill(pid, SIGCONT)
            throw error
        }
        #expect(kill(pid, SIGCONT) == 0)
    }
}
