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
        let sentCount = Atomic<Int>(0)
        let publishing = Task {
            // A steady load through every outage, paced at about 2,000 a second so that the
            // broker (and rabbitmqctl, which the cycles need) keeps up on a loaded machine;
            // bounded in count as well.
            while !stop.load(ordering: .relaxed), sentCount.load(ordering: .relaxed) < 1_000_000 {
                _ = try await channel.publishWithConfirm(Array("x".utf8), routingKey: connection.currentName(ofQueue: queue.name))
                if sentCount.add(1, ordering: .relaxed).newValue % 100 == 0 { try await Task.sleep(for: .milliseconds(50)) }
            }
        }
        // Warm up one cycle so lazily created resources (the watchdog thread) exist.
        func cycle() async throws {
            let index = log.count
            try await TestBroker.closeConnection(named: name)
            try await log.recovered(after: index)
        }
        try await cycle()
        let before = ProcessResources.current()
        let (sentBefore, receivedBefore) = (sentCount.load(ordering: .relaxed), received.load(ordering: .relaxed))
        for _ in 0..<10 { try await cycle() }
        let after = ProcessResources.current()
        let (sentAfter, receivedAfter) = (sentCount.load(ordering: .relaxed), received.load(ordering: .relaxed))
        stop.store(true, ordering: .relaxed)
        try await publishing.value
        let recoveries = log.all.filter { $0.isRecovered }.count
        #expect(recoveries == 11, "one recovery per outage, no more")
        #expect(sentAfter > sentBefore && receivedAfter > receivedBefore, "publishing and consuming went on through the outages")
        #expect(after.threads <= before.threads + 2, "threads \(before.threads) -> \(after.threads)")
        #expect(after.descriptors <= before.descriptors + 4, "fds \(before.descriptors) -> \(after.descriptors)")
        #expect(after.residentBytes <= before.residentBytes + 64 << 20, "RSS \(before.residentBytes) -> \(after.residentBytes)")
        print("10 outages: threads \(before.threads)->\(after.threads), fds \(before.descriptors)->\(after.descriptors), RSS \(before.residentBytes >> 20)->\(after.residentBytes >> 20) MiB, \(sentAfter - sentBefore) published during them")
        consuming.cancel()
        try await connection.close()
    }
}
