import Testing

@testable import RabbitMQ

@Suite("URI parsing")
struct URIParsingTests {
    @Test func defaultsFromAMinimalURI() throws {
        let configuration = try RabbitMQConfiguration(uri: "amqp://localhost")
        #expect(configuration.endpoints == [.init(host: "localhost", port: 5672, useTLS: false)])
        #expect(configuration.username == "guest")
        #expect(configuration.password == "guest")
        #expect(configuration.virtualHost == "/")
    }

    @Test func everyPart() throws {
        let configuration = try RabbitMQConfiguration(
            uri: "amqp://alice:s3cret@broker.example:5673/orders?heartbeat=7&connection_timeout=2500&frame_max=8192&channel_max=10&connection_name=billing")
        #expect(configuration.endpoints == [.init(host: "broker.example", port: 5673)])
        #expect(configuration.username == "alice")
        #expect(configuration.password == "s3cret")
        #expect(configuration.virtualHost == "orders")
        #expect(configuration.heartbeat == .seconds(7))
        #expect(configuration.connectTimeout == .milliseconds(2500))
        #expect(configuration.frameMax == 8192)
        #expect(configuration.channelMax == 10)
        #expect(configuration.connectionName == "billing")
    }

    @Test func percentDecoding() throws {
        let configuration = try RabbitMQConfiguration(uri: "amqp://us%40er:p%3Ass%2Fw%25rd@host/%2Fprod")
        #expect(configuration.username == "us@er")
        #expect(configuration.password == "p:ss/w%rd")
        #expect(configuration.virtualHost == "/prod")
    }

    @Test func defaultVirtualHostSpellings() throws {
        #expect(try RabbitMQConfiguration(uri: "amqp://host/").virtualHost == "/")
        #expect(try RabbitMQConfiguration(uri: "amqp://host/%2f").virtualHost == "/")
        #expect(try RabbitMQConfiguration(uri: "amqp://host/%2F").virtualHost == "/")
    }

    @Test func tlsSchemeAndIPv6() throws {
        let tls = try RabbitMQConfiguration(uri: "amqps://host?cacertfile=/etc/ca.pem&verify=verify_none")
        #expect(tls.endpoints == [.init(host: "host", port: 5671, useTLS: true)])
        #expect(tls.tls.caCertificatePath == "/etc/ca.pem")
        #expect(tls.tls.verifyPeer == false)
        let v6 = try RabbitMQConfiguration(uri: "amqp://[::1]:5699/")
        #expect(v6.endpoints == [.init(host: "::1", port: 5699)])
        #expect(v6.endpoints[0].description == "amqp://[::1]:5699")
    }

    @Test func tlsNameAndAuthenticationMechanism() throws {
        let external = try RabbitMQConfiguration(
            uri: "amqps://host?certfile=/c.pem&keyfile=/c.key&auth_mechanism=EXTERNAL&server_name_indication=rabbit.example")
        #expect(external.authenticationMechanism == .external)
        #expect(external.tls.serverName == "rabbit.example")
        #expect(external.tls.certificatePath == "/c.pem" && external.tls.keyPath == "/c.key")
        try external.validate()
        #expect(try RabbitMQConfiguration(uri: "amqp://host").authenticationMechanism == .plain)
        // Repeated, in order of preference: the first one supported wins.
        let preferred = try RabbitMQConfiguration(uri: "amqps://host?auth_mechanism=amqplain&auth_mechanism=plain")
        #expect(preferred.authenticationMechanism == .plain)
        for bad in ["amqp://host?auth_mechanism=cr-demo", "amqps://host?server_name_indication="] {
            #expect(throws: RabbitMQError.self, "\(bad)") { try RabbitMQConfiguration(uri: bad) }
        }
    }

    @Test func tlsSettingsThatCannotWorkAreRefused() throws {
        // EXTERNAL over plain TCP, or without a client certificate.
        var plainTCP = try RabbitMQConfiguration(uri: "amqp://host?certfile=/c.pem&keyfile=/c.key&auth_mechanism=external")
        #expect(throws: RabbitMQError.self) { try plainTCP.validate() }
        plainTCP.endpoints.append(.init(host: "other", useTLS: true))
        #expect(throws: RabbitMQError.self) { try plainTCP.validate() }
        let noCertificate = try RabbitMQConfiguration(uri: "amqps://host?auth_mechanism=external")
        #expect(throws: RabbitMQError.self) { try noCertificate.validate() }
        // A certificate without its key, or the other way round, is never silently ignored.
        for query in ["certfile=/c.pem", "keyfile=/c.key"] {
            let half = try RabbitMQConfiguration(uri: "amqps://host?\(query)")
            let error = #expect(throws: RabbitMQError.self) { try half.validate() }
            #expect(error?.code == .invalidConfiguration)
        }
        var emptyName = RabbitMQConfiguration(useTLS: true)
        emptyName.tls.serverName = ""
        #expect(throws: RabbitMQError.self) { try emptyName.validate() }
    }

    @Test func clusterURIs() throws {
        let configuration = try RabbitMQConfiguration(uris: [
            "amqp://u:p@node1:5672/vh", "amqp://node2:5673", "amqp://node3",
        ])
        #expect(configuration.endpoints.map(\.host) == ["node1", "node2", "node3"])
        #expect(configuration.endpoints.map(\.port) == [5672, 5673, 5672])
        #expect(configuration.username == "u")
        #expect(configuration.virtualHost == "vh")
    }

    @Test(arguments: [
        ("http://host", "unsupported scheme 'http'"),
        ("localhost:5672", "unsupported scheme 'localhost'"),
        ("guest@host", "missing scheme"),
        ("amqp://host:99999", "port '99999'"),
        ("amqp://host:abc", "port 'abc'"),
        ("amqp://host/a/b", "one path segment"),
        ("amqp://host?heartbeat=x", "heartbeat=x"),
        ("amqp://host?frame_max=100", "frame_max=100"),
        ("amqp://host?frame_max=4096", "frame_max=4096"),
        ("amqp://host?hearbeat=5", "unsupported query parameter 'hearbeat'"),
        ("amqp://us%zzer@host", "bad percent-encoding in the user"),
        ("amqp://[::1", "unterminated IPv6"),
    ])
    func badURIsNameTheProblem(uri: String, expected: String) {
        do {
            _ = try RabbitMQConfiguration(uri: uri)
            Issue.record("\(uri) parsed")
        } catch {
            #expect(error.code == .invalidURI)
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }

    @Test func passwordsNeverAppearInDescriptionsOrErrors() throws {
        let configuration = try RabbitMQConfiguration(uri: "amqp://alice:TopSecret42@host/")
        #expect(!configuration.description.contains("TopSecret42"))
        #expect(configuration.description.contains("<redacted>"))
        #expect(!String(reflecting: configuration.endpoints).contains("TopSecret42"))
        do {
            _ = try RabbitMQConfiguration(uri: "amqp://alice:TopSecret42@host:bad/")
            Issue.record("parsed")
        } catch {
            #expect(!error.description.contains("TopSecret42"))
            #expect(!error.message.contains("TopSecret42"))
        }
    }

    @Test func validationRejectsOutOfRangeSettings() {
        var configuration = RabbitMQConfiguration()
        configuration.frameMax = 1024
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        // AMQP allows 4096, RabbitMQ 4.1 and later refuse less than 8192 at the handshake.
        configuration.frameMax = 4096
        let small = #expect(throws: RabbitMQError.self) { try configuration.validate() }
        #expect(small?.message.contains("8192") == true)
        configuration.frameMax = 8192
        #expect(throws: Never.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration()
        configuration.endpoints = []
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration()
        configuration.requestTimeout = .zero
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        #expect(throws: Never.self) { try RabbitMQConfiguration().validate() }
    }

    /// Defect: what connection.start-ok and connection.open cannot carry reached rabbitmq-c,
    /// which wrote a corrupt frame (a long table key's length in one byte) or failed with an
    /// untyped error, and deep client properties were copied by recursion on the I/O thread.
    @Test func validationRejectsWhatTheHandshakeCannotCarry() {
        var configuration = RabbitMQConfiguration()
        configuration.clientProperties = [String(repeating: "k", count: 256): "v"]
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration()
        var deep: RabbitMQFieldValue = .int32(1)
        for _ in 0..<RabbitMQFieldTable.maxDepth { deep = .table(["d": deep]) }
        configuration.clientProperties = ["deep": deep]
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration()
        configuration.virtualHost = String(repeating: "v", count: 256)
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration()
        configuration.username = String(repeating: "u", count: 300)
        configuration.clientProperties = ["ok": "v"]
        configuration.virtualHost = String(repeating: "v", count: 255)
        #expect(throws: Never.self) { try configuration.validate() }
    }
}
