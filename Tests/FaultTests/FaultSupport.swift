import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Synchronization

/// What a consumer saw, per message id.
final class ConsumptionLog: Sendable {
    struct Record: Sendable {
        var count = 0
        var redelivered = false
    }
    private let records = Mutex<[String: Record]>([:])
    private let arrivals = Mutex<[ContinuousClock.Instant]>([])

    func add(_ delivery: RabbitMQDelivery) {
        let id = delivery.properties.messageID ?? ""
        records.withLock { records in
            records[id, default: Record()].count += 1
            if delivery.redelivered { records[id]!.redelivered = true }
        }
        arrivals.withLock { $0.append(.now) }
    }

    var distinct: Int { records.withLock { $0.count } }
    var snapshot: [String: Record] { records.withLock { $0 } }

    /// Consumes `queue` on a new channel of `connection` with manual acks, recording every
    /// delivery, until `total` distinct messages have arrived.
    static func consume(
        _ queue: String, on connection: RabbitMQConnection, prefetch: UInt16, until total: Int
    ) async throws -> (log: ConsumptionLog, task: Task<Void, any Error>) {
        let channel = try await connection.openChannel()
        try await channel.qos(prefetchCount: prefetch)
        let consumer = try await channel.consume(queue: queue)
        let log = ConsumptionLog()
        let task = Task {
            for try await delivery in consumer {
                log.add(delivery)
                try delivery.ack()
                if log.distinct == total { break }
            }
        }
        return (log, task)
    }

    /// The first arrival at or after `instant`.
    func firstArrival(after instant: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        arrivals.withLock { $0.first { $0 >= instant } }
    }
}

/// Cluster endpoints and control, exported by `scripts/cluster.sh env`.
enum TestCluster {
    static var urls: [String] {
        get throws {
            guard let value = ProcessInfo.processInfo.environment["RABBITMQ_CLUSTER_URLS"], !value.isEmpty else {
                throw TestSupportError("RABBITMQ_CLUSTER_URLS is not set: run the tests through scripts/test.sh")
            }
            return value.split(separator: ",").map(String.init)
        }
    }

    /// The nodes' TLS listeners, verified by the cluster's test CA (`cacertfile` in each URL).
    static var tlsURLs: [String] {
        get throws {
            guard let value = ProcessInfo.processInfo.environment["RABBITMQ_CLUSTER_TLS_URLS"], !value.isEmpty else {
                throw TestSupportError("RABBITMQ_CLUSTER_TLS_URLS is not set: run the tests through scripts/test.sh")
            }
            return value.split(separator: ",").map(String.init)
        }
    }

    @discardableResult
    static func control(_ arguments: String...) async throws -> String {
        guard let script = ProcessInfo.processInfo.environment["RABBITMQ_CLUSTER_CTL"] else {
            throw TestSupportError("RABBITMQ_CLUSTER_CTL is not set: run the tests through scripts/test.sh")
        }
        return try await TestBroker.run(script, arguments)
    }
}

/// Runs the broker control script (`scripts/broker.sh`) of the single test broker.
@discardableResult
func brokerControl(_ arguments: String...) async throws -> String {
    guard let script = ProcessInfo.processInfo.environment["RABBITMQ_TEST_CTL"] else {
        throw TestSupportError("RABBITMQ_TEST_CTL is not set: run the tests through scripts/test.sh")
    }
    return try await TestBroker.run(script, arguments)
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

/// A number shared between tasks.
final class Counter: Sendable {
    private let storage = Atomic<Int>(0)
    var value: Int { storage.load(ordering: .relaxed) }
    func set(_ value: Int) { storage.store(value, ordering: .relaxed) }
}

/// Whether something accepts TCP connections on 127.0.0.1:port.
func acceptsConnections(port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}
