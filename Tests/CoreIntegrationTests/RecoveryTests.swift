import Foundation
import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

/// Recovery after the broker closes one connection (`rabbitmqctl close_connection`): only
/// the test's own connection is affected, so these run alongside the other tests.
@Suite("Recovery after a closed connection", .timeLimit(.minutes(3)))
struct RecoveryTests {
    @Test func serverNamedExclusiveQueueIsRenamedAndItsBindingAndConsumerRestored() async throws {
        let name = TestBroker.uniqueName("rename")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let fanout = TestBroker.uniqueName("broadcast")
        try await channel.exchangeDeclare(fanout, type: .fanout)
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.queueBind(queue: queue.name, exchange: fanout)
        let consumer = try await channel.consume(queue: queue.name, autoAck: true)
        var iterator = consumer.makeAsyncIterator()

        try await channel.publish("before", exchange: fanout, routingKey: "")
        #expect(try await iterator.next()?.bodyString == "before")

        try await TestBroker.closeConnection(named: name, reason: "recovery test")
        let renamed = try await log.next("queueRenamed") { if case .queueRenamed = $0 { true } else { false } }
        guard case .queueRenamed(let old, let new) = renamed.event else {
            Issue.record("expected a queueRenamed event, got \(renamed.event)")
            return
        }
        #expect(old == queue.name)
        #expect(new != queue.name && new.hasPrefix("amq.gen-"))
        try await log.recovered()

        // The broadcast after recovery reaches the new queue, through the same sequence.
        let publisher = try await TestBroker.connect()
        try await publisher.openChannel().publish("after", exchange: fanout, routingKey: "")
        let delivery = try #require(try await iterator.next())
        #expect(delivery.bodyString == "after")
        #expect(delivery.consumerTag == consumer.consumerTag, "the same consumer tag")
        #expect(delivery.routingKey == "")

        let kinds = log.all.map { event -> String in
            switch event {
            case .disconnected: "disconnected"
            case .recoveryAttempt: "attempt"
            case .connected: "connected"
            case .queueRenamed: "renamed"
            case .recovered: "recovered"
            default: "other"
            }
        }
        #expect(kinds == ["disconnected", "attempt", "connected", "renamed", "recovered"], "\(log.all)")

        // Idle after recovery means asleep in poll() on the new socket, not spinning: the
        // thread is seen blocked in poll with a timeout other than zero (a spinning loop never
        // blocks, or polls with a zero timeout). Seen, not timed: nothing depends on load.
        let thread = connection.core.threadName
        // Five looks in a row, so that a loop that only blocks now and then between busy
        // turns is not taken for an idle one.
        try await eventually(timeout: .seconds(60), "the I/O thread to sleep in poll()") {
            for _ in 0..<5 {
                guard let sleeping = ProcessResources.isSleepingInPoll(thread: thread) else {
                    throw TestSupportError("no thread named \(thread)")
                }
                if !sleeping { return false }
                try await Task.sleep(for: .milliseconds(20))
            }
            return true
        }
        try await channel.exchangeDelete(fanout)
        try await publisher.close()
        try await connection.close()
    }

    @Test func consumersKeepYieldingAndStaleAcksAreDropped() async throws {
        let name = TestBroker.uniqueName("stale")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("durable-q"), durable: true)
        try await channel.qos(prefetchCount: 10)
        let consumer = try await channel.consume(queue: queue.name)
        var iterator = consumer.makeAsyncIterator()
        try await channel.confirmSelect()
        #expect(try await channel.publishAndWaitForConfirm(Array("one".utf8), routingKey: queue.name) == .acked)
        let first = try #require(try await iterator.next())
        #expect(!first.redelivered)

        #expect(!connection.isRecovering)
        try await TestBroker.closeConnection(named: name)
        try await log.recovered()
        #expect(!connection.isRecovering && connection.isOpen)

        // The ack belongs to the dead connection: dropped locally, no 406 on the new channel.
        try first.ack()
        let again = try #require(try await iterator.next())
        #expect(again.bodyString == "one")
        #expect(again.redelivered, "the broker requeued the unacked message")
        try again.ack()
        // A round trip after the acks: the broker answers it only after it has taken them, so
        // a stale tag would have closed the channel (406) by then and this would throw.
        #expect(try await channel.publishAndWaitForConfirm(Array("two".utf8), routingKey: queue.name) == .acked)
        let second = try #require(try await iterator.next())
        #expect(second.bodyString == "two")
        try second.ack()
        let state = try await channel.queueDeclare(queue.name, passive: true)
        #expect(state.messageCount == 0, "every message acknowledged")
        #expect(channel.isOpen, "no stale delivery tag reached the broker")
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    /// A connection through a proxy that can hold an outage open for as long as the test
    /// needs it (new connections refused), so nothing depends on a back-off being long enough.
    static func connectThroughProxy(_ name: String) async throws -> (RabbitMQConnection, FaultProxy) {
        let proxy = try TestBroker.proxy()
        let connection = try await RabbitMQConnection.connect(configuration: TestBroker.configuration(through: proxy, name: name))
        return (connection, proxy)
    }

    @Test func aPublisherWaitingOutAnOutageCanBeCancelled() async throws {
        let name = TestBroker.uniqueName("outage-cancel")
        let (connection, proxy) = try await Self.connectThroughProxy(name)
        defer { proxy.stop() }
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        // The outage lasts until the end of the test: the publish can only end by its cancel.
        proxy.setMode(.rejectNewConnections)
        try await TestBroker.closeConnection(named: name)
        try await log.next("disconnected") { if case .disconnected = $0 { true } else { false } }
        let publishing = Task { try await channel.publish("x", routingKey: TestBroker.uniqueName("nowhere")) }
        // Cancel only once the publish waits for the connection: a task cancelled before it
        // starts fails at its first check and says nothing about a waiting publisher.
        try await eventually("the publish to wait for the outage to end") {
            connection.core.publishesWaitingForRecovery == 1
        }
        publishing.cancel()
        await #expect(throws: CancellationError.self) { try await publishing.value }
        #expect(connection.core.publishesWaitingForRecovery == 0, "the cancelled publisher stopped waiting")
        #expect(!log.all.contains { $0.isRecovered })
        try await connection.close()
    }

    @Test func publishesDuringAnOutageWaitAndGoThrough() async throws {
        let name = TestBroker.uniqueName("outage")
        let (connection, proxy) = try await Self.connectThroughProxy(name)
        defer { proxy.stop() }
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("outage-q"), durable: true)
        try await channel.confirmSelect(maxOutstanding: 100)

        // Publish continuously across the close; every confirmation must end acked.
        let publishing = Task {
            var confirmations: [RabbitMQConfirmation] = []
            for index in 0..<3_000 {
                confirmations.append(
                    try await channel.publishWithConfirm(
                        Array("\(index)".utf8), routingKey: queue.name, properties: .init(deliveryMode: .persistent)))
            }
            var acked = 0
            var republished = 0
            for confirmation in confirmations {
                if try await confirmation.outcome() == .acked { acked += 1 }
                if confirmation.wasRepublished { republished += 1 }
            }
            return (acked, republished)
        }
        let probe = try await TestBroker.connect(recovery: .disabled)
        let probeChannel = try await probe.openChannel()
        try await eventually("publishing to start") {
            try await probeChannel.queueDeclare(queue.name, passive: true).messageCount > 100
        }
        try await probe.close()
        // The outage lasts until the 100 below are handed over: they wait for the recovery
        // and then go through (the 3,000 may all be confirmed already).
        proxy.setMode(.rejectNewConnections)
        try await TestBroker.closeConnection(named: name)
        let lost = log.count
        _ = try await log.next("disconnected") { if case .disconnected = $0 { true } else { false } }
        let begun = Counter()
        let returned = Counter()
        let outagePublishes = Task {
            var confirmations: [RabbitMQConfirmation] = []
            for index in 0..<100 {
                begun.add()
                confirmations.append(
                    try await channel.publishWithConfirm(
                        Array("outage-\(index)".utf8), routingKey: queue.name, properties: .init(deliveryMode: .persistent)))
                returned.add()
            }
            return confirmations
        }
        try await eventually("a publish to wait for the recovery") {
            begun.current >= 1 && connection.core.publishesWaitingForRecovery >= 1
        }
        #expect(returned.current == 0, "a publish went through while no connection was possible")
        #expect(!log.all.dropFirst(lost).contains { $0.isRecovered }, "the connection came back during the outage")
        proxy.setMode(.passThrough)
        try await log.recovered(after: lost)
        let duringOutage = try await outagePublishes.value
        for confirmation in duringOutage { #expect(try await confirmation.outcome() == .acked) }
        let (acked, republished) = try await publishing.value
        #expect(acked == 3_000)
        let count = try await channel.queueDeclare(queue.name, passive: true).messageCount
        // At least once: every message is there; duplicates only from re-published ones.
        #expect(count >= 3_100)
        #expect(Int(count) <= 3_100 + republished)
        print("outage publish: 3000 confirmed, 100 during the outage, \(republished) re-published, \(count) in the queue")
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func deletedTopologyIsNotResurrected() async throws {
        let name = TestBroker.uniqueName("forget")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let kept = try await channel.queueDeclare(TestBroker.uniqueName("kept"), exclusive: true)
        let deleted = try await channel.queueDeclare(TestBroker.uniqueName("deleted"), exclusive: true)
        let exchange = TestBroker.uniqueName("gone-x")
        try await channel.exchangeDeclare(exchange, type: .direct, autoDelete: false)
        try await channel.queueBind(queue: kept.name, exchange: exchange, routingKey: "k")
        try await channel.queueDelete(deleted.name)
        try await channel.exchangeDelete(exchange)

        try await TestBroker.closeConnection(named: name)
        try await log.recovered()

        // The exclusive queue came back (it died with the old connection); the deleted ones did not.
        #expect(try await channel.queueDeclare(kept.name, passive: true).name == kept.name)
        let probe = try await connection.openChannel()
        let error = await #expect(throws: RabbitMQError.self) { try await probe.queueDeclare(deleted.name, passive: true) }
        #expect(error?.code == .notFound)
        let exchangeProbe = try await connection.openChannel()
        let exchangeError = await #expect(throws: RabbitMQError.self) {
            try await exchangeProbe.exchangeDeclare(exchange, passive: true)
        }
        #expect(exchangeError?.code == .notFound)
        try await connection.close()
    }

    @Test func aConsumerCancelledByTheBrokerIsNotResurrected() async throws {
        let name = TestBroker.uniqueName("cancelled")
        let connection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("doomed"), durable: true)
        let consumer = try await channel.consume(queue: queue.name)
        let consuming = Task { for try await _ in consumer {} }

        let other = try await TestBroker.connect()
        try await other.openChannel().queueDelete(queue.name)
        let error = await #expect(throws: RabbitMQError.self) { try await consuming.value }
        #expect(error?.code == .consumerCancelled)

        try await TestBroker.closeConnection(named: name)
        try await log.recovered()
        // The queue is re-declared from the registry (we declared it), but nobody consumes it.
        let check = try await other.openChannel()
        #expect(try await check.queueDeclare(queue.name, passive: true).consumerCount == 0)
        try await check.queueDelete(queue.name)
        try await other.close()
        try await connection.close()
    }

    @Test func aRefusedLoginStopsRecoveryWithATypedError() async throws {
        let user = TestBroker.uniqueName("user")
        try await TestBroker.ctl("add_user", user, "first-password")
        try await TestBroker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        var configuration = try TestBroker.configuration(name: TestBroker.uniqueName("refused"))
        configuration.username = user
        configuration.password = "first-password"
        configuration.recovery.maxAttempts = 5
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let consumer = try await channel.consume(queue: queue.name)
        let consuming = Task { for try await _ in consumer {} }

        try await TestBroker.ctl("change_password", user, "second-password")
        try await TestBroker.closeConnection(named: configuration.connectionName!)
        let error = await #expect(throws: RabbitMQError.self) { try await consuming.value }
        #expect(error?.code == .authenticationFailed)
        _ = try await log.next("recoveryFailed") { if case .recoveryFailed = $0 { true } else { false } }
        let attempts = log.all.filter { if case .recoveryAttempt = $0 { true } else { false } }.count
        #expect(attempts == 1, "a refused login is not retried: \(log.all)")
        #expect(!connection.isOpen)
        #expect(!log.all.contains { $0.isRecovered })
        let text = error?.description ?? ""
        #expect(!text.contains("second-password") && !text.contains("first-password"))
        try await TestBroker.ctl("delete_user", user)
    }

    @Test func topologyFilterSkipsAFilteredQueue() async throws {
        let name = TestBroker.uniqueName("filtered")
        var configuration = try TestBroker.configuration(name: name)
        let skipped = TestBroker.uniqueName("skip")
        configuration.recovery.topologyFilter.queues = { [skipped] queueName in queueName != skipped }
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        try await channel.queueDeclare(skipped, exclusive: true)
        let kept = try await channel.queueDeclare(TestBroker.uniqueName("keep"), exclusive: true)
        try await TestBroker.closeConnection(named: name)
        try await log.recovered()
        #expect(try await channel.queueDeclare(kept.name, passive: true).name == kept.name)
        let error = await #expect(throws: RabbitMQError.self) { try await channel.queueDeclare(skipped, passive: true) }
        #expect(error?.code == .notFound)
        try await connection.close()
    }

    /// Defect: commands that reached the connection while a recovery attempt was under way
    /// (the I/O thread busy connecting) were never answered when that attempt ended the
    /// connection (a refused login stops recovery): the loop ended with them still queued,
    /// and their callers waited for ever.
    @Test func commandsQueuedDuringTheLastRecoveryAttemptAreAnswered() async throws {
        let user = TestBroker.uniqueName("user")
        try await TestBroker.ctl("add_user", user, "first-password")
        try await TestBroker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        let proxy = try TestBroker.proxy()
        defer { proxy.stop() }
        var configuration = try TestBroker.configuration(through: proxy, name: TestBroker.uniqueName("last-attempt"))
        configuration.username = user
        configuration.password = "first-password"
        configuration.handshakeTimeout = .seconds(60)
        let connection = try await RabbitMQConnection.connect(configuration: configuration)
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        try await TestBroker.ctl("change_password", user, "second-password")
        // The next attempt's handshake takes seconds (every chunk is held a second each
        // way) and ends with the refused login, which ends the connection.
        proxy.setMode(.latency(.seconds(1)))
        proxy.cutAll()
        try await log.next("the recovery attempt") { if case .recoveryAttempt = $0 { true } else { false } }
        // The I/O thread is in the attempt: these wait in its queue until the attempt ends.
        let declaring = Task { try await channel.queueDeclare(TestBroker.uniqueName("never"), durable: true) }
        let opening = Task { try await connection.openChannel() }
        let closing = Task { try await connection.close() }
        try await withTimeout(.seconds(60), "the queued commands to be answered") {
            await #expect(throws: RabbitMQError.self) { try await declaring.value }
            await #expect(throws: RabbitMQError.self) { try await opening.value }
            // Closing a connection that has ended is not an error.
            try? await closing.value
        }
        #expect(!connection.isOpen)
        // The attempt is what ended the connection (not the close, which came after it).
        try await log.next("recoveryFailed with the refused login") {
            if case .recoveryFailed(let error) = $0 { error.code == .authenticationFailed } else { false }
        }
        try await TestBroker.ctl("delete_user", user)
    }
}

/// Threads, descriptors and resident memory of this process, from /proc.
struct ProcessResources {
    var threads: Int
    var descriptors: Int
    var residentBytes: Int

    static func current() -> ProcessResources {
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return ProcessResources(threads: threads, descriptors: descriptors, residentBytes: pages * Int(sysconf(Int32(_SC_PAGESIZE))))
    }

    /// Whether the thread with this name is blocked in `poll` (or `ppoll`) with a timeout
    /// other than zero right now, from `/proc/self/task/*/syscall`: the system call number
    /// and its arguments while the thread is blocked in one, `running` otherwise. Nil when no
    /// thread has that name.
    static func isSleepingInPoll(thread name: String) -> Bool? {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        for task in tasks {
            let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
            guard comm.trimmingCharacters(in: .whitespacesAndNewlines) == name else { continue }
            let syscall = (try? String(contentsOfFile: "/proc/self/task/\(task)/syscall", encoding: .utf8)) ?? ""
            let fields = syscall.split(separator: " ")
            guard fields.count > 3, let number = Int(fields[0]) else { return false }
            // The third argument: poll's timeout in milliseconds (-1: none), where zero is the
            // only value that does not sleep. glibc's poll() is the poll system call on
            // x86_64; elsewhere it is ppoll, whose third argument points to the timeout, so
            // only blocked in ppoll is seen there.
            #if arch(x86_64)
                return number == 7 && fields[3] != "0x0"
            #else
                return number == 73
            #endif
        }
        return nil
    }
}
