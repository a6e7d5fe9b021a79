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
        ("amqp://host:abc", "the port is not a number"),
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

/// Issue 13: passwords with the characters generated passwords hold, raw and
/// percent-encoded, and errors that never show any part of them.
@Suite("URI parsing: passwords with reserved characters")
struct URIPasswordParsingTests {
    /// One password per character, and one with all of them; the fragments between the
    /// characters are what no message may contain.
    static let fragments = ["Kx7q", "Zr9w", "Mn3b", "Lp5t", "Hd8j", "Gs2v", "Qf6c", "Yt4e"]
    static let specials: [Character] = ["/", "?", "#", ",", ":", "@", "%"]
    static let passwords: [String] =
        specials.map { "Kx7q\($0)Zr9w" } + ["Kx7q/Zr9w?Mn3b#Lp5t,Hd8j:Gs2v@Qf6c%Yt4e", "Kx7q@@Zr9w//", "@Kx7q:"]

    /// The password as written raw in a URI: everything as is but `%`, the escape character.
    static func raw(_ password: String) -> String {
        String(password.flatMap { $0 == "%" ? Array("%25") : [$0] })
    }

    /// Every byte but letters and digits percent-encoded, as any client's encoder would.
    static func encoded(_ password: String) -> String {
        password.utf8.map { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                String(UnicodeScalar(byte))
            default:
                "%" + String(byte, radix: 16, uppercase: true)
            }
        }.joined()
    }

    static func expectNoSecret(_ text: String, _ uri: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for fragment in fragments {
            #expect(!text.contains(fragment), "'\(fragment)' of \(uri) in: \(text)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: passwords)
    func rawPasswords(password: String) throws {
        for form in [Self.raw(password), Self.encoded(password)] {
            let full = try RabbitMQConfiguration(uri: "amqp://app:\(form)@broker.example:5673/orders?heartbeat=7")
            #expect(full.username == "app")
            #expect(full.password == password)
            #expect(full.endpoints == [.init(host: "broker.example", port: 5673)])
            #expect(full.virtualHost == "orders")
            #expect(full.heartbeat == .seconds(7))
            let bare = try RabbitMQConfiguration(uri: "amqps://app:\(form)@[::1]")
            #expect(bare.password == password)
            #expect(bare.endpoints == [.init(host: "::1", port: 5671, useTLS: true)])
            #expect(bare.virtualHost == "/")
            let slash = try RabbitMQConfiguration(uri: "amqp://app:\(form)@host/")
            #expect(slash.password == password && slash.endpoints[0].host == "host" && slash.virtualHost == "/")
        }
    }

    /// The authority ends at the first `/`, `?` or `#` after the last `@`, so what follows
    /// the host keeps its meaning whatever the password holds.
    @Test func theLastAtEndsTheUserInformation() throws {
        let configuration = try RabbitMQConfiguration(uri: "amqp://a%3Ab:p@ss/w?rd#x@host:1234/%2Fvh?connection_name=n%40m")
        #expect(configuration.username == "a:b")
        #expect(configuration.password == "p@ss/w?rd#x")
        #expect(configuration.endpoints == [.init(host: "host", port: 1234)])
        #expect(configuration.virtualHost == "/vh")
        #expect(configuration.connectionName == "n@m")
        // Without an '@', a '/', '?' or '#' ends the authority as in RFC 3986.
        let plain = try RabbitMQConfiguration(uri: "amqps://host?cacertfile=/etc/ca.pem")
        #expect(plain.endpoints == [.init(host: "host", port: 5671, useTLS: true)])
        #expect(plain.tls.caCertificatePath == "/etc/ca.pem")
        // A user name alone, with an '@' of its own percent-encoded.
        let user = try RabbitMQConfiguration(uri: "amqp://us%40er@host")
        #expect(user.username == "us@er" && user.password == "guest")
    }

    /// Every error about a URI with such a password: the message names the problem and
    /// shows the URI with the password masked.
    @Test(arguments: passwords)
    func errorsNeverShowThePassword(password: String) {
        let raw = Self.raw(password)
        var bad = [
            "amqp://app:\(raw)@host:abc/", "amqp://app:\(raw)@host:99999/", "amqp://app:\(raw)@host/a/b",
            "amqp://app:\(raw)@host?nope=1", "amqp://app:\(raw)@host?heartbeat=x", "amqp://app:\(raw)@host#top",
            "amqp://app:\(raw)@[::1", "http://app:\(raw)@host", "AMQP://app:\(raw)@host",
            // A list cut at a comma in the password: no '@' left.
            "amqp://app:Kx7q", "amqp://app:Kx7q/Zr9w", "amqp://app:Kx7q?Zr9w", "amqp://app:Kx7q#Zr9w",
        ]
        // A raw '%' followed by no two hex digits is a bad escape.
        if password.contains("%") { bad.append("amqp://app:\(password)@host") }
        for uri in bad {
            do {
                let parsed = try RabbitMQConfiguration(uris: [uri])
                Issue.record("\(uri) parsed: \(parsed)")
            } catch {
                #expect(error.code == .invalidURI)
                Self.expectNoSecret(error.message, uri)
                Self.expectNoSecret(error.description, uri)
                Self.expectNoSecret("\(error)", uri)
            }
        }
    }

    @Test func redactionMasksWhatTheParserTakesForThePassword() {
        let cases = [
            ("amqp://app:Kx7q/Zr9w@host/", "amqp://app:***@host/"),
            ("amqps://app:a@b?c#d,e:f%25@[::1]:5671/vh?heartbeat=5", "amqps://app:***@[::1]:5671/vh?heartbeat=5"),
            ("amqp://app:@host", "amqp://app:***@host"),
            ("amqp://app@host/", "amqp://app@host/"),
            ("amqp://host:5672/vh", "amqp://host:5672/vh"),
            ("amqp://[::1]:5672", "amqp://[::1]:5672"),
            // No '@' and a port that is not one: a password cut from its '@'.
            ("amqp://app:Kx7q", "amqp://app:***"),
            ("amqp://app:Kx7q/Zr9w?x#y", "amqp://app:***"),
            ("amqp://[::1]:Kx7q", "amqp://[::1]:***"),
            ("app:Kx7q@host", "app:***@host"),
            ("http://app:Kx7q@host", "http://app:***@host"),
        ]
        for (uri, expected) in cases {
            #expect(RabbitMQConfiguration.redactedURI(uri) == expected)
        }
    }

    @Test func aListSplitsOnlyWhereAnotherURIStarts() {
        #expect(
            RabbitMQConfiguration.splitURIList("amqp://app:pa,ss@h1/, amqps://h2,amqp://app:x%2Cy@h3")
                == ["amqp://app:pa,ss@h1/", "amqps://h2", "amqp://app:x%2Cy@h3"])
        #expect(RabbitMQConfiguration.splitURIList(" amqp://h1 ,\tAMQP://h2 , ") == ["amqp://h1", "AMQP://h2"])
        #expect(RabbitMQConfiguration.splitURIList("amqp://a:,,b@h") == ["amqp://a:,,b@h"])
        #expect(RabbitMQConfiguration.splitURIList("") == [])
        for password in URIPasswordParsingTests.passwords {
            let first = "amqp://app:\(URIPasswordParsingTests.raw(password))@h1/"
            #expect(RabbitMQConfiguration.splitURIList("\(first),amqp://h2") == [first, "amqp://h2"])
        }
    }

    @Test func errorsShowTheURIMasked() {
        do {
            _ = try RabbitMQConfiguration(uris: ["amqp://h1", "amqp://app:Kx7q/Zr9w@host:http/"])
            Issue.record("parsed")
        } catch {
            #expect(error.message == "the port is not a number in amqp://app:***@host:http/")
        }
    }
}
