import Foundation
import Logging
import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

/// The test broker's TLS listener (`scripts/broker.sh` makes a CA, a server certificate for
/// `localhost` and `127.0.0.1`, a client certificate and an unrelated CA with `openssl`).
@Suite("TLS", .enabled(if: TestBroker.hasTLS), .timeLimit(.minutes(3)))
struct TLSTests {
    /// What `rabbitmqctl list_connections` says of the connection named `name`: its columns
    /// `ssl`, `user`, `auth_mechanism` and `peer_cert_subject`, once it is listed.
    private func brokerView(of name: String) async throws -> [String] {
        var columns: [String] = []
        try await eventually("the connection \(name) to be listed") {
            let output = try await TestBroker.ctl(
                "list_connections", "client_properties", "ssl", "user", "auth_mechanism", "peer_cert_subject",
                "--no-table-headers", "--silent")
            guard let line = output.split(separator: "\n").first(where: { $0.contains("\"\(name)\"") }) else { return false }
            // The client properties come first, then tab-separated columns.
            columns = line.split(separator: "\t").dropFirst().map(String.init)
            return true
        }
        return columns
    }

    /// An error expected from a connection that reaches the listener: when the connect itself
    /// failed instead, the failure also says whether `openssl s_client` completes a handshake
    /// with the listener just then, and what the broker logged about TLS over the last 70 s
    /// (the connect's 60 s, and some).
    private func expectNotAConnectFailure(_ error: RabbitMQError?, sourceLocation: SourceLocation = #_sourceLocation) async {
        guard let error, error.code == .connectFailed else { return }
        Issue.record(
            TestSupportError("the connect failed: \(error); \(await TestBroker.tlsHandshakeProbe(since: Date(timeIntervalSinceNow: -70)))"),
            sourceLocation: sourceLocation)
    }

    @Test func verifiedByTheCAAtAnIPAddressInTheSubjectAltName() async throws {
        // The server certificate names 127.0.0.1 as an IP address only: rabbitmq-c 0.11's own
        // check (DNS names) refuses it; OpenSSL's, which the connection uses, accepts it.
        let name = TestBroker.uniqueName("tls-ip")
        let configuration = try TestBroker.tlsConfiguration(name: name)
        #expect(configuration.endpoints.first?.host == "127.0.0.1")
        #expect(configuration.tls.verifyPeer && configuration.tls.verifyHostname)
        let connection = try await TestBroker.connectOverTLS(configuration: configuration)
        let columns = try await brokerView(of: name)
        #expect(columns.first == "true", "the broker sees TLS: \(columns)")

        // Many small messages (batched into few TLS writes) and large bodies (written from
        // the caller's array, several frames each) arrive whole and in order.
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.confirmSelect()
        let large = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var confirmations: [RabbitMQConfirmation] = []
        for index in 0..<2_000 {
            let body = index % 500 == 499 ? large + Array("\(index)".utf8) : Array("m\(index)".utf8)
            confirmations.append(try await channel.publishWithConfirm(body, routingKey: queue.name))
        }
        for confirmation in confirmations { #expect(try await confirmation.outcome() == .acked) }
        let consumer = try await channel.consume(queue: queue.name, autoAck: true)
        var iterator = consumer.makeAsyncIterator()
        for index in 0..<2_000 {
            let delivery = try #require(try await iterator.next())
            let expected = index % 500 == 499 ? large + Array("\(index)".utf8) : Array("m\(index)".utf8)
            #expect(delivery.body == expected, "message \(index)")
            if delivery.body != expected { break }
        }
        try await connection.close()
    }

    @Test func verifiedByDNSName() async throws {
        var configuration = try TestBroker.tlsConfiguration()
        configuration.endpoints = configuration.endpoints.map { .init(host: "localhost", port: $0.port, useTLS: true) }
        let connection = try await TestBroker.connectOverTLS(configuration: configuration)
        try await connection.openChannel().queueDeclare("", exclusive: true)
        try await connection.close()
    }

    @Test func anUnrelatedCAIsRefusedWithAVerificationError() async throws {
        var configuration = try TestBroker.tlsConfiguration()
        configuration.tls.caCertificatePath = try TestBroker.tlsFile("other-ca.pem")
        let error = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: configuration)
        }
        await expectNotAConnectFailure(error)
        #expect(error?.code == .tls)
        #expect(error?.message.contains("verification") == true, "\(String(describing: error))")
        // OpenSSL's reason, about the chain (the broker sends its CA along).
        #expect(error?.message.contains("certificate was refused (") == true, "\(String(describing: error))")
        #expect(error?.message.contains("chain") == true || error?.message.contains("issuer") == true)
    }

    @Test func aCertificateForAnotherNameIsRefused() async throws {
        for expected in ["rabbit.example.com", "127.0.0.2"] {
            let configuration = try TestBroker.tlsConfiguration(query: "&server_name_indication=\(expected)")
            #expect(configuration.tls.serverName == expected)
            let error = await #expect(throws: RabbitMQError.self) {
                try await RabbitMQConnection.connect(configuration: configuration)
            }
            await expectNotAConnectFailure(error)
            #expect(error?.code == .tls)
            #expect(error?.message.contains("does not name '\(expected)'") == true, "\(String(describing: error))")
        }
        // The name check alone, without verifying the chain (rabbitmq-c ignores the result
        // then; the connection checks it itself).
        var unverified = try TestBroker.tlsConfiguration(query: "&server_name_indication=rabbit.example.com")
        unverified.tls.verifyPeer = false
        let error = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: unverified)
        }
        await expectNotAConnectFailure(error)
        #expect(error?.code == .tls)
        #expect(error?.message.contains("does not name 'rabbit.example.com'") == true, "\(String(describing: error))")
    }

    @Test func theNameItCarriesIsAcceptedAndChecksCanBeTurnedOff() async throws {
        // Reached by address, verified by the DNS name the certificate carries.
        let named = try TestBroker.tlsConfiguration(query: "&server_name_indication=localhost")
        try await TestBroker.connectOverTLS(configuration: named).close()
        // No name check.
        var anyName = try TestBroker.tlsConfiguration(query: "&server_name_indication=rabbit.example.com")
        anyName.tls.verifyHostname = false
        try await TestBroker.connectOverTLS(configuration: anyName).close()
        // No verification at all, and no CA.
        var none = try RabbitMQConfiguration(uri: TestBroker.tlsURL + "&verify=verify_none")
        none.tls.caCertificatePath = nil
        try await TestBroker.connectOverTLS(configuration: none).close()
    }

    @Test func mutualTLSPresentsTheClientCertificate() async throws {
        let name = TestBroker.uniqueName("mtls")
        let configuration = try TestBroker.tlsConfiguration(
            name: name, query: "&certfile=\(TestBroker.tlsFile("client.pem"))&keyfile=\(TestBroker.tlsFile("client.key"))")
        let connection = try await TestBroker.connectOverTLS(configuration: configuration)
        let columns = try await brokerView(of: name)
        #expect(columns.count >= 4, "\(columns)")
        #expect(columns.first == "true")
        #expect(columns.dropFirst().first == "guest", "PLAIN still decides the user: \(columns)")
        #expect(columns.last?.contains("CN=\(TestBroker.tlsClientName)") == true, "the broker saw the certificate: \(columns)")
        try await connection.close()
    }

    @Test func externalAuthenticationLogsInByTheCertificatesName() async throws {
        // The user named by the client certificate's common name, with no password at all.
        let user = TestBroker.tlsClientName
        try await TestBroker.ensureTLSClientUser()

        let name = TestBroker.uniqueName("external")
        let query = "&certfile=\(try TestBroker.tlsFile("client.pem"))&keyfile=\(try TestBroker.tlsFile("client.key"))"
        var configuration = try TestBroker.tlsConfiguration(name: name, query: query + "&auth_mechanism=external")
        #expect(configuration.authenticationMechanism == .external)
        configuration.password = "not-sent-\(UUID())"
        let connection = try await TestBroker.connectOverTLS(configuration: configuration)
        let columns = try await brokerView(of: name)
        #expect(columns.dropFirst().first == user, "logged in as the certificate's name: \(columns)")
        #expect(columns.dropFirst(2).first == "EXTERNAL", "\(columns)")
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        try await channel.publish("by certificate", routingKey: queue.name)
        let consumer = try await channel.consume(queue: queue.name, autoAck: true)
        var iterator = consumer.makeAsyncIterator()
        #expect(try await iterator.next()?.bodyString == "by certificate")
        try await connection.close()

        // Without a client certificate the configuration is refused before connecting.
        let bare = try TestBroker.tlsConfiguration(query: "&auth_mechanism=external")
        let error = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: bare)
        }
        #expect(error?.code == .invalidConfiguration)
    }

    @Test func recoveryOverTLSLosesNoConfirmedMessage() async throws {
        let name = TestBroker.uniqueName("tls-recovery")
        let connection = try await TestBroker.connectOverTLS(configuration: TestBroker.tlsConfiguration(name: name))
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("tls-durable"), durable: true)
        try await channel.confirmSelect()
        let consumer = try await channel.consume(queue: queue.name, autoAck: true)
        var iterator = consumer.makeAsyncIterator()
        try await channel.publishAndWaitForConfirm(Array("before".utf8), routingKey: queue.name)
        #expect(try await iterator.next()?.bodyString == "before")

        try await TestBroker.closeConnection(named: name, reason: "TLS recovery test")
        try await log.recovered()
        #expect(try await channel.publishAndWaitForConfirm(Array("after".utf8), routingKey: queue.name) == .acked)
        #expect(try await iterator.next()?.bodyString == "after")
        let columns = try await brokerView(of: name)
        #expect(columns.first == "true", "the recovered connection is TLS too: \(columns)")
        try await channel.queueDelete(queue.name)
        try await connection.close()
    }

    @Test func failoverOverTLSSkipsADeadEndpoint() async throws {
        // The first endpoint refuses connections; the second is the TLS listener.
        let listener = try #require(try TestBroker.tlsConfiguration().endpoints.first)
        var configuration = try TestBroker.tlsConfiguration()
        configuration.endpoints = [.init(host: "127.0.0.1", port: 1, useTLS: true), listener]
        let connection = try await TestBroker.connectOverTLS(configuration: configuration)
        #expect(connection.endpoint == listener)
        try await connection.close()
    }

    @Test func neitherPasswordNorKeyReachesAnErrorOrTheLog() async throws {
        let records = LogRecords()
        let password = "Secret-\(UUID())"
        let keyPath = try TestBroker.tlsFile("client.key")
        let key = try String(contentsOfFile: keyPath, encoding: .utf8)
        let keyLines = key.split(separator: "\n").filter { !$0.hasPrefix("-----") }.map(String.init)

        var configuration = try TestBroker.tlsConfiguration(
            query: "&certfile=\(TestBroker.tlsFile("client.pem"))&keyfile=\(keyPath)")
        configuration.logger = Logger(label: "tls-test") { _ in RecordingLogHandler(records) }
        configuration.logger.logLevel = .trace
        configuration.password = password
        let refused = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: configuration)
        }
        await expectNotAConnectFailure(refused)
        #expect(refused?.code == .authenticationFailed)

        // A key that does not belong to the certificate.
        var mismatched = configuration
        mismatched.password = "guest"
        mismatched.tls.certificatePath = try TestBroker.tlsFile("server.pem")
        let unloadable = await #expect(throws: RabbitMQError.self) {
            try await RabbitMQConnection.connect(configuration: mismatched)
        }
        await expectNotAConnectFailure(unloadable)
        #expect(unloadable?.code == .tls)

        // A connection that logs in, is closed by the broker and recovers.
        let name = TestBroker.uniqueName("tls-secrets")
        var good = configuration
        good.password = "guest"
        good.connectionName = name
        let connection = try await TestBroker.connectOverTLS(configuration: good)
        let log = ConnectionEventLog(connection)
        try await TestBroker.closeConnection(named: name)
        try await log.recovered()
        try await connection.close()

        var texts = records.all + [String(describing: configuration), String(describing: good)]
        texts += [refused, unloadable].compactMap { $0.map { "\($0) \($0.message)" } }
        #expect(!records.all.isEmpty, "the connection logged something")
        for text in texts {
            #expect(!text.contains(password), "the password in: \(text)")
            #expect(!text.contains("guest@") && !text.contains(":guest"), "a password in: \(text)")
            for line in keyLines { #expect(!text.contains(line), "key material in: \(text)") }
        }
    }
}

/// Every log record, as one line with its metadata.
final class LogRecords: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }
}

struct RecordingLogHandler: LogHandler {
    let records: LogRecords
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    init(_ records: LogRecords) { self.records = records }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        records.append("\(event.level) \(event.message) \(merged)")
    }
}
