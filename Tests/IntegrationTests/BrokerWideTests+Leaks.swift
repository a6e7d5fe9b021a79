import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

extension BrokerWideTests {
    /// Here rather than with the other recovery tests: it measures the threads, descriptors
    /// and memory of the whole process, which tests running alongside would change.
    @Test func manyOutagesUnderLoadLeakNothing() async throws {
        let name = TestBroker.uniqueName("churn")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.qos(prefetchCount: 50)
        let consumer = try await channel.consume(queue: queue.name)
        let received = Atomic<Int>(0)
        let consuming = Task {
            for try await delivery in consumer {
                try delivery.ack()
                received.add(1, ordering: .relaxed)
            }
        }
        try await channel.confirmSelect(maxOutstanding: 200)
        let stop = Atomic<Bool>(false)
        let publishing = Task {
            var sent = 0
            while !stop.load(ordering: .relaxed), sent < 200_000 {
                _ = try await channel.publishWithConfirm(Array("x".utf8), routingKey: connection.currentName(ofQueue: queue.name))
                sent += 1
            }
            return sent
        }
        // Warm up one cycle so lazily created resources (the watchdog thread) exist.
        var recoveries = 0
        func cycle() async throws {
            let index = log.count
            try await TestBroker.closeConnection(named: name)
            _ = try await log.next("recovered", after: index) { if case .recovered = $0 { true } else { false } }
            recoveries += 1
        }
        try await cycle()
        let before = ProcessResources.current()
        for _ in 0..<10 { try await cycle() }
        let after = ProcessResources.current()
        stop.store(true, ordering: .relaxed)
        let sent = try await publishing.value
        #expect(recoveries == 11)
        #expect(sent > 0 && received.load(ordering: .relaxed) > 0)
        #expect(after.threads <= before.threads + 2, "threads \(before.threads) -> \(after.threads)")
        #expect(after.descriptors <= before.descriptors + 4, "fds \(before.descriptors) -> \(after.descriptors)")
        #expect(after.residentBytes <= before.residentBytes + 64 << 20, "RSS \(before.residentBytes) -> \(after.residentBytes)")
        print("10 outages: threads \(before.threads)->\(after.threads), fds \(before.descriptors)->\(after.descriptors), RSS \(before.residentBytes >> 20)->\(after.residentBytes >> 20) MiB, \(sent) published")
        consuming.cancel()
        try await connection.close()
    }
}
