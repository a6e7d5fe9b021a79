import Foundation
import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

@Suite("Connections", .timeLimit(.minutes(2)))
struct ConnectionTests {
    @Test func wrongCredentialsFailFastWithAnAuthenticationError() async throws {
        var configuration = try TestBroker.configuration()
        configuration.password = "definitely-wrong-\(UUID())"
        let started = ContinuousClock.now
        let error = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: configuration)
        }
        #expect(error?.code == .authenticationFailed)
        #expect(error?.scope == .connection)
        #expect(error.map { !$0.description.contains(configuration.password) } == true)
        // Not a timing assertion on speed, only a guard against a hang until a timeout.
        #expect(ContinuousClock.now - started < configuration.handshakeTimeout)
    }

    @Test func unknownVirtualHostIsNotAllowed() async throws {
        var configuration = try TestBroker.configuration()
        configuration.virtualHost = TestBroker.uniqueName("no-such-vhost")
        let error = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: configuration)
        }
        #expect(error?.code == .notAllowed)
    }

    @Test func unreachableEndpointNamesTheEndpointNeverThePassword() async throws {
        var configuration = try RabbitMQConfiguration(uri: "amqp://guest:Hidden123@127.0.0.1:1/")
        configuration.connectTimeout = .seconds(2)
        let error = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: configuration)
        }
        #expect(error?.code == .connectFailed)
        #expect(error?.message.contains("127.0.0.1:1") == true)
        #expect(error.map { !$0.description.contains("Hidden123") } == true)
    }

    @Test func badURIIsRejectedBeforeConnecting() async throws {
        let error = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(uri: "amqp://guest:guest@127.0.0.1:notaport/")
        }
        #expect(error?.code == .invalidURI)
    }

    @Test func negotiatesAndAdvertisesCapabilities() async throws {
        let name = TestBroker.uniqueName("caps")
        let connection = try await TestBroker.connect(name: name, heartbeat: .seconds(7))
        #expect(connection.negotiatedHeartbeat == 7)
        #expect(connection.negotiatedFrameMax == 131_072)
        #expect(connection.negotiatedChannelMax > 0)
        #expect(connection.serverProperties["product"] == .string("RabbitMQ"))
        // The broker may list a new connection a moment after it answered the handshake.
        var listed: Substring?
        try await eventually("the connection to be listed") {
            let listing = try await TestBroker.ctl("list_connections", "--no-table-headers", "--silent", "client_properties")
            listed = listing.split(separator: "\n").first { $0.contains("\"\(name)\"") }
            return listed != nil
        }
        let ours = try #require(listed)
        for capability in ["consumer_cancel_notify", "connection.blocked", "publisher_confirms", "basic.nack", "authentication_failure_close"] {
            #expect(ours.contains("{\"\(capability)\",true}"), "\(capability) advertised")
        }
        try await connection.close()
    }

    @Test func brokerSideCloseSurfacesATypedErrorEverywhereWithoutRecovery() async throws {
        let name = TestBroker.uniqueName("closed")
        let connection = try await TestBroker.connect(name: name, recovery: .disabled)
        let events = connection.events()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let consumer = try await channel.consume(queue: queue.name)
        let consuming = Task { for try await _ in consumer {} }
        let confirmChannel = try await connection.openChannel()
        try await confirmChannel.confirmSelect()

        try await TestBroker.closeConnection(named: name, reason: "test closing")

        let consumerError = await #expect(throws: RabbitMQError.self) { try await consuming.value }
        #expect(consumerError?.code == .connectionForced)
        #expect(consumerError?.replyCode == 320)
        #expect(consumerError?.scope == .connection)
        #expect(consumerError?.replyText?.contains("test closing") == true)

        var closeEvent: RabbitMQError?? = nil
        for await event in events {
            if case .closed(let error) = event { closeEvent = error }
        }
        #expect(closeEvent??.code == .connectionForced, "the events sequence reports the close, then ends")

        #expect(!connection.isOpen)
        #expect(!channel.isOpen)
        let later = await #expect(throws: RabbitMQError.self) { try await confirmChannel.publish("x", routingKey: "q") }
        #expect(later?.code == .connectionForced)
        let open = await #expect(throws: RabbitMQError.self) { try await connection.openChannel() }
        #expect(open?.code == .connectionForced)
        try await connection.close()  // a no-op on a closed connection
    }

    @Test func gracefulCloseFlushesQueuedPublishesAndEndsConsumers() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("flush"), durable: true)
        let consumerConnection = try await TestBroker.connect()
        let consumer = try await consumerConnection.openChannel().consume(queue: queue.name)
        let acked = Atomic<Int>(0)
        let consuming = Task {
            var count = 0
            for try await delivery in consumer {
                try delivery.ack()
                count += 1
                acked.store(count, ordering: .relaxed)
            }
            return count
        }
        // Fire-and-forget publishes still queued for the I/O thread are sent before close-ok.
        for index in 0..<500 { try await channel.publish("\(index)", routingKey: queue.name) }
        let events = connection.events()
        try await connection.close()
        #expect(!connection.isOpen)
        #expect(connection.closeReason?.code == .closed)
        var sawClosed = false
        for await event in events {
            if case .closed(nil) = event { sawClosed = true }
        }
        #expect(sawClosed)

        let verify = try await TestBroker.connect()
        let verifyChannel = try await verify.openChannel()
        try await eventually("all 500 messages consumed") {
            try await verifyChannel.queueDeclare(queue.name, passive: true).messageCount == 0
        }
        // An empty queue (no message ready) can still have deliveries on their way to the
        // consumer or not yet acknowledged: close only once it has acknowledged all of them.
        try await eventually("the consumer to acknowledge all 500") { acked.load(ordering: .relaxed) == 500 }
        try await consumerConnection.close()
        // A graceful close ends the consumer's sequence normally.
        #expect(try await consuming.value == 500)
        try await verifyChannel.queueDelete(queue.name)
        try await verify.close()
    }

    @Test func ioThreadsStopWhenConnectionsClose() async throws {
        var connections: [RabbitMQConnection] = []
        for _ in 0..<5 { connections.append(try await TestBroker.connect()) }
        let names = Set(connections.map(\.core.threadName))
        #expect(ioThreadNames().isSuperset(of: names), "one I/O thread per connection")
        for connection in connections { try await connection.close() }
        try await eventually("the I/O threads to exit") { ioThreadNames().isDisjoint(with: names) }
    }
}

/// Names of this process's I/O threads (`rmq-io-<id>`).
func ioThreadNames() -> Set<String> {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return Set(
        tasks.compactMap { task in
            let name = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
            let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
            return trimmed.hasPrefix("rmq-io") ? trimmed : nil
        })
}
