import Glibc
import RabbitMQ
import RabbitMQTestSupport
import Testing

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

/// Tasks that prefer a connection's executor run on its I/O thread (SE-0417), round trips
/// included, and go on elsewhere once the connection has closed.
@Suite("The connection's executor", .timeLimit(.minutes(5)))
struct ConnectionExecutorTests {
    /// The name of the thread running the caller (`rmq-io-N` for a connection's I/O thread).
    static func threadName() -> String {
        let descriptor = open("/proc/thread-self/comm", O_RDONLY)
        guard descriptor >= 0 else { return "?" }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = read(descriptor, &buffer, buffer.count)
        guard count > 0 else { return "?" }
        return String(decoding: buffer[..<count], as: UTF8.self).trimmingSuffix("\n")
    }

    @Test func roundTripsOfATaskThatPrefersItRunOnTheIOThread() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("executor-confirm"), exclusive: true)
        try await channel.confirmSelect()
        let threads = try await withTaskExecutorPreference(connection.executor) {
            var threads: Set<String> = []
            for index in 0..<200 {
                let outcome = try await channel.publishAndWaitForConfirm(Array("\(index)".utf8), routingKey: queue.name)
                #expect(outcome == .acked)
                threads.insert(Self.threadName())
            }
            return threads
        }
        #expect(threads.count == 1 && threads.first?.hasPrefix("rmq-io-") == true, "ran on \(threads)")
        #expect(try await channel.queueDeclare(queue.name, passive: true).messageCount == 200)
        try await connection.close()
    }

    @Test func aConsumerOnItHandlesEveryDeliveryOnTheIOThread() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("executor-consume"), exclusive: true)
        try await channel.qos(prefetchCount: 50)
        let consumer = try await channel.consume(queue: queue.name)
        let publisher = try await connection.openChannel()
        try await publisher.confirmSelect()
        for index in 0..<500 {
            _ = try await publisher.publishWithConfirm(Array("\(index)".utf8), routingKey: queue.name)
        }
        let (bodies, threads) = try await withTaskExecutorPreference(connection.executor) {
            var bodies: [String] = []
            var threads: Set<String> = []
            for try await delivery in consumer {
                bodies.append(delivery.bodyString)
                threads.insert(Self.threadName())
                try delivery.ack()
                if bodies.count == 500 { break }
            }
            return (bodies, threads)
        }
        #expect(bodies == (0..<500).map { "\($0)" })
        #expect(threads.count == 1 && threads.first?.hasPrefix("rmq-io-") == true, "ran on \(threads)")
        try await eventually("every delivery to be acknowledged") {
            let state = try await publisher.queueDeclare(queue.name, passive: true)
            return state.messageCount == 0
        }
        try await connection.close()
    }

    @Test func aTaskThatClosesTheConnectionGoesOnElsewhere() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let (before, after) = try await withTaskExecutorPreference(connection.executor) {
            _ = try await channel.queueDeclare(TestBroker.uniqueName("executor-close"), exclusive: true)
            let before = Self.threadName()
            try await connection.close()
            // Jobs after the I/O thread ended run on the global executor: the task is not
            // stranded on a thread that no longer runs anything.
            await Task.yield()
            _ = try? await channel.queueDeclare("never", passive: true)
            await Task.yield()
            return (before, Self.threadName())
        }
        #expect(before.hasPrefix("rmq-io-"))
        #expect(!after.hasPrefix("rmq-io-"), "still on \(after) after the connection closed")
        #expect(!connection.isOpen)
    }

    @Test func aTaskThatKeepsYieldingOnItDoesNotStopTheConnectionFromReading() async throws {
        // A task that splits long work with Task.yield() keeps the loop busy: it must still
        // read the socket now and then, or every answer waits for that task to finish.
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("executor-busy"), exclusive: true)
        try await channel.confirmSelect()
        _ = try await channel.publishAndWaitForConfirm(Array("waiting".utf8), routingKey: queue.name)
        let running = AsyncStream.makeStream(of: Void.self)
        let worker = Task(executorPreference: connection.executor) {
            running.continuation.yield()
            while !Task.isCancelled { await Task.yield() }
        }
        // However the test ends, the worker stops yielding on the I/O thread.
        defer { worker.cancel() }
        for await _ in running.stream { break }
        // A round trip from another task on the same executor, while the worker yields.
        let body = try await withTimeout(.seconds(60), "basic.get while a task yields on the I/O thread") {
            try await withTaskExecutorPreference(connection.executor) {
                try await channel.get(queue: queue.name, autoAck: true)?.bodyString
            }
        }
        worker.cancel()
        await worker.value
        #expect(body == "waiting")
        try await connection.close()
    }

    @Test func aTaskOnItGoesOnAcrossARecovery() async throws {
        // The I/O thread is busy reconnecting while the connection is down: a task on its
        // executor waits, and goes on on the same thread once the connection is back.
        let name = TestBroker.uniqueName("executor-recovery")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("executor-recovery"), durable: true)
        try await channel.confirmSelect()
        let acked = Counter()
        let confirmed = AsyncStream.makeStream(of: Int.self)
        let publisher = Task(executorPreference: connection.executor) {
            var threads: Set<String> = []
            while !Task.isCancelled {
                // A publish caught by the drop may fail; the loop goes on, as an application would.
                if (try? await channel.publishAndWaitForConfirm(Array("m".utf8), routingKey: queue.name)) == .acked {
                    threads.insert(Self.threadName())
                    confirmed.continuation.yield(acked.add())
                }
            }
            return threads
        }
        defer { publisher.cancel() }
        var counts = confirmed.stream.makeAsyncIterator()
        while let count = await counts.next(), count < 20 {}
        try await TestBroker.closeConnection(named: name, reason: "executor recovery test")
        _ = try await log.recovered()
        // Twenty more confirmed after the recovery, by the task that waited through it.
        let atRecovery = acked.current
        while let count = await counts.next(), count < atRecovery + 20 {}
        publisher.cancel()
        let threads = await publisher.value
        #expect(threads.allSatisfy { $0.hasPrefix("rmq-io-") }, "ran on \(threads)")
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func cancellingATaskWaitingOnItEndsItsLoop() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("executor-cancel"), exclusive: true)
        let consumer = try await channel.consume(queue: queue.name)
        let started = AsyncStream.makeStream(of: Void.self)
        let task = Task(executorPreference: connection.executor) {
            started.continuation.yield()
            var received = 0
            for try await delivery in consumer {
                received += 1
                try delivery.ack()
            }
            return received
        }
        for await _ in started.stream { break }
        task.cancel()
        // The iterator ends (cancelling the consumer) instead of waiting for ever.
        let received = try await task.value
        #expect(received == 0)
        try await eventually("the consumer to be cancelled") {
            try await channel.queueDeclare(queue.name, passive: true).consumerCount == 0
        }
        try await connection.close()
    }
}
