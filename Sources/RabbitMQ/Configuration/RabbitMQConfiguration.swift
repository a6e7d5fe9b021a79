import Logging
import Metrics
import Tracing

/// Everything a ``RabbitMQConnection`` needs to know, as a value.
///
/// Build one from a URI, or set the properties directly. Every property has a default,
/// documented on its `Default:` line, and ``validate()`` checks the ranges before a
/// connection is attempted.
///
/// ```swift
/// var configuration = try RabbitMQConfiguration(uri: "amqp://guest:guest@127.0.0.1:5672/")
/// configuration.connectionName = "billing-worker"
/// configuration.logger = Logger(label: "billing.rabbitmq")
/// ```
///
/// The description redacts the password.
public struct RabbitMQConfiguration: Sendable, CustomStringConvertible {
    /// One broker address.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// Host name or IP address.
        public var host: String
        /// TCP port. Default: 5672, or 5671 with TLS.
        public var port: Int
        /// Whether to speak TLS (`amqps`). Default: false.
        public var useTLS: Bool

        /// Creates an endpoint.
        public init(host: String, port: Int? = nil, useTLS: Bool = false) {
            self.host = host
            self.port = port ?? (useTLS ? 5671 : 5672)
            self.useTLS = useTLS
        }

        public var description: String {
            let host = self.host.contains(":") ? "[\(self.host)]" : self.host
            return "\(useTLS ? "amqps" : "amqp")://\(host):\(port)"
        }
    }

    /// TLS settings for `amqps` endpoints.
    public struct TLS: Sendable, Hashable {
        /// PEM file of the certificate authorities to trust. The system trust store is not
        /// loaded (rabbitmq-c 0.11 has no call for it; 0.14's is not made yet), so peer
        /// verification needs this. Default: nil.
        public var caCertificatePath: String?
        /// PEM client certificate for mutual TLS. Default: nil.
        public var certificatePath: String?
        /// PEM private key of the client certificate. Default: nil.
        public var keyPath: String?
        /// Verify the broker's certificate chain. Default: true.
        public var verifyPeer: Bool
        /// Verify that the certificate names the host connected to (or ``serverName``): a DNS
        /// name in its subjectAltName (or common name), or an IP address in its subjectAltName
        /// when the host is an address. OpenSSL checks it during verification. Default: true.
        public var verifyHostname: Bool
        /// The name the broker's certificate must carry when it is not the host connected to,
        /// for example a broker reached by IP address whose certificate names it by DNS name
        /// (the URI's `server_name_indication`). rabbitmq-c sends the host as the TLS server
        /// name indication either way. Default: nil (the endpoint's host).
        public var serverName: String?

        /// Creates TLS settings; the defaults verify everything.
        public init(
            caCertificatePath: String? = nil, certificatePath: String? = nil, keyPath: String? = nil,
            verifyPeer: Bool = true, verifyHostname: Bool = true, serverName: String? = nil
        ) {
            self.caCertificatePath = caCertificatePath
            self.certificatePath = certificatePath
            self.keyPath = keyPath
            self.verifyPeer = verifyPeer
            self.verifyHostname = verifyHostname
            self.serverName = serverName
        }
    }

    /// How the connection authenticates (the SASL mechanism of `connection.start-ok`).
    public enum AuthenticationMechanism: Sendable, Hashable {
        /// ``username`` and ``password``, sent inside the connection (TLS keeps them secret
        /// on the wire).
        case plain
        /// The client certificate of a TLS connection; the broker takes the user name from it
        /// (by default its common name). Needs `amqps` endpoints, ``TLS/certificatePath`` and
        /// ``TLS/keyPath``, and on the broker the `rabbitmq_auth_mechanism_ssl` plugin with
        /// `EXTERNAL` in `auth_mechanisms`. ``password`` is not sent; ``username`` goes as the
        /// SASL authorization identity, which RabbitMQ ignores.
        case external
    }

    /// The brokers to connect to, tried in order. Default: `amqp://127.0.0.1:5672`.
    public var endpoints: [Endpoint]
    /// The virtual host. Default: `/`.
    public var virtualHost: String
    /// How to log in. Default: `.plain` (``username`` and ``password``).
    public var authenticationMechanism: AuthenticationMechanism
    /// The user for PLAIN authentication. Default: `guest`.
    public var username: String
    /// The password for PLAIN authentication; never logged or printed. Default: `guest`.
    public var password: String
    /// The heartbeat interval to request; the smaller of ours and the broker's wins, and
    /// `.zero` turns heartbeats off (not recommended: a dead peer then goes unnoticed for
    /// as long as TCP takes). A silent peer is detected after two intervals.
    /// Default: 30 seconds.
    public var heartbeat: Duration
    /// The largest frame to negotiate, in bytes (at least ``minimumFrameMax``, 8192).
    /// Default: 131072.
    public var frameMax: Int

    /// The smallest `frameMax` accepted: 8192, the least RabbitMQ 4.1 and later accept
    /// (AMQP's own minimum, 4096, is refused by them at the handshake).
    public static let minimumFrameMax = 8192
    /// The most channels this connection may open (1...65535). Each channel number in use
    /// pins about `frameMax` bytes of rabbitmq-c memory until the connection closes, so keep
    /// it modest. Default: 256.
    public var channelMax: Int
    /// How long opening the TCP connection (and TLS handshake) may take. Default: 10 seconds.
    public var connectTimeout: Duration
    /// How long the AMQP handshake (including login) may take. Default: 10 seconds.
    public var handshakeTimeout: Duration
    /// How long a request to the broker (declare, bind, consume, ...) may wait for its reply.
    /// A timed-out request closes its channel. Default: 30 seconds.
    public var requestTimeout: Duration
    /// How long ``RabbitMQConnection/close()`` waits for outstanding confirms and the
    /// broker's `close-ok` before it drops the socket. Default: 10 seconds.
    public var closeTimeout: Duration
    /// A name shown for this connection in the broker's management UI and `rabbitmqctl
    /// list_connections name`, sent as the `connection_name` client property. Default: nil.
    public var connectionName: String?
    /// Extra client properties sent at login. Default: empty.
    public var clientProperties: RabbitMQFieldTable
    /// How many publishes may wait for the I/O thread before `publish` suspends its caller;
    /// this bounds the memory held by fire-and-forget publishers. Default: 1024.
    public var publishBufferLimit: Int
    /// TLS settings, used by `amqps` endpoints. Default: verify peer and host name, no CA file.
    public var tls: TLS
    /// Automatic recovery of lost connections. Default: enabled; see ``Recovery``.
    public var recovery: Recovery
    /// The order in which ``endpoints`` are tried when connecting and reconnecting; each
    /// attempt on an endpoint is bounded by ``connectTimeout`` and ``handshakeTimeout``.
    /// Default: `.inOrder`.
    public var endpointSelection: EndpointSelection
    /// Where the connection logs (routine events at info or below). Default: a logger with
    /// label `rabbitmq`, which goes where the application bootstrapped swift-log (without a
    /// bootstrap, swift-log's default writes info and above to standard error).
    public var logger: Logger
    /// Where the connection's metrics go (<doc:Metrics> names them).
    /// Counters are made when the connection opens. Default: nil, meaning the factory
    /// bootstrapped with swift-metrics' `MetricsSystem` when the connection opens (which
    /// records nothing unless the application bootstrapped one).
    public var metricsFactory: (any MetricsFactory)?
    /// The tracer for the spans of publishes and of the patterns' handlers, and the
    /// instrument that writes the trace context into message headers. Default: nil,
    /// meaning `InstrumentationSystem.tracer` as bootstrapped when the connection opens;
    /// with none bootstrapped nothing is recorded or injected, at no cost per message.
    /// <doc:Tracing> says which spans and headers.
    public var tracer: (any Tracer)?

    /// A configuration for one broker, with every other setting at its default.
    public init(
        host: String = "127.0.0.1", port: Int? = nil, virtualHost: String = "/",
        username: String = "guest", password: String = "guest", useTLS: Bool = false
    ) {
        self.endpoints = [Endpoint(host: host, port: port, useTLS: useTLS)]
        self.virtualHost = virtualHost
        self.authenticationMechanism = .plain
        self.username = username
        self.password = password
        self.heartbeat = .seconds(30)
        self.frameMax = 131_072
        self.channelMax = 256
        self.connectTimeout = .seconds(10)
        self.handshakeTimeout = .seconds(10)
        self.requestTimeout = .seconds(30)
        self.closeTimeout = .seconds(10)
        self.connectionName = nil
        self.clientProperties = [:]
        self.publishBufferLimit = 1024
        self.tls = TLS()
        self.recovery = Recovery()
        self.endpointSelection = .inOrder
        self.logger = Logger(label: "rabbitmq")
        self.metricsFactory = nil
        self.tracer = nil
    }

    /// Checks every setting; throws ``RabbitMQError/Code-swift.struct/invalidConfiguration`` naming
    /// the first one out of range.
    public func validate() throws(RabbitMQError) {
        guard !endpoints.isEmpty else { throw .invalidConfiguration("no endpoints") }
        for endpoint in endpoints {
            guard !endpoint.host.isEmpty else { throw .invalidConfiguration("empty host") }
            guard (1...65535).contains(endpoint.port) else {
                throw .invalidConfiguration("port \(endpoint.port) is outside 1...65535")
            }
        }
        if (tls.certificatePath == nil) != (tls.keyPath == nil) {
            throw .invalidConfiguration("a client certificate needs both tls.certificatePath and tls.keyPath")
        }
        if let serverName = tls.serverName, serverName.isEmpty || serverName.utf8.contains(0) {
            throw .invalidConfiguration("tls.serverName must be a non-empty name without NUL bytes")
        }
        if authenticationMechanism == .external {
            guard endpoints.allSatisfy(\.useTLS) else {
                throw .invalidConfiguration("EXTERNAL authentication needs TLS (amqps) on every endpoint")
            }
            guard tls.certificatePath != nil else {
                throw .invalidConfiguration("EXTERNAL authentication needs a client certificate (tls.certificatePath and tls.keyPath)")
            }
        }
        guard heartbeat >= .zero, heartbeat <= .seconds(65535) else {
            throw .invalidConfiguration("heartbeat must be between 0 and 65535 seconds")
        }
        guard (Self.minimumFrameMax...Int(Int32.max)).contains(frameMax) else {
            throw .invalidConfiguration(
                "frameMax \(frameMax) is outside \(Self.minimumFrameMax)...\(Int32.max) (RabbitMQ 4.1 and later refuse less than 8192; AMQP's own minimum is 4096)")
        }
        guard (1...65535).contains(channelMax) else {
            throw .invalidConfiguration("channelMax \(channelMax) is outside 1...65535")
        }
        for (name, value) in [
            ("connectTimeout", connectTimeout), ("handshakeTimeout", handshakeTimeout),
            ("requestTimeout", requestTimeout), ("closeTimeout", closeTimeout),
        ] where value <= .zero {
            throw .invalidConfiguration("\(name) must be positive")
        }
        guard recovery.initialDelay >= .zero, recovery.maxDelay >= recovery.initialDelay else {
            throw .invalidConfiguration("recovery delays must satisfy 0 <= initialDelay <= maxDelay")
        }
        guard recovery.multiplier >= 1, (0...1).contains(recovery.jitter) else {
            throw .invalidConfiguration("recovery multiplier must be >= 1 and jitter within 0...1")
        }
        if let attempts = recovery.maxAttempts, attempts < 1 {
            throw .invalidConfiguration("recovery maxAttempts must be at least 1 (or nil)")
        }
        guard recovery.publishWaitTimeout > .zero else {
            throw .invalidConfiguration("recovery publishWaitTimeout must be positive")
        }
        guard publishBufferLimit > 0 else {
            throw .invalidConfiguration("publishBufferLimit must be positive")
        }
        guard !username.utf8.contains(0), !password.utf8.contains(0), !virtualHost.utf8.contains(0) else {
            throw .invalidConfiguration("credentials and virtual host cannot contain NUL bytes")
        }
        // What connection.start-ok and connection.open carry: the virtual host is a short
        // string, and the client properties a table with short-string keys, copied to C by
        // recursion on the I/O thread.
        guard virtualHost.utf8.count <= 255 else {
            throw .invalidConfiguration("the virtual host is \(virtualHost.utf8.count) bytes long; AMQP allows at most 255")
        }
        let (_, depth, longKey) = clientProperties.measured()
        guard depth <= RabbitMQFieldTable.maxDepth else {
            throw .invalidConfiguration("clientProperties nest tables and arrays more than \(RabbitMQFieldTable.maxDepth) deep")
        }
        guard !longKey else { throw .invalidConfiguration("clientProperties have a key longer than AMQP's 255 bytes") }
    }

    public var description: String {
        let endpoints = self.endpoints.map(\.description).joined(separator: ", ")
        return "RabbitMQConfiguration(endpoints: [\(endpoints)], virtualHost: \(virtualHost), "
            + "username: \(username), password: <redacted>, heartbeat: \(heartbeat), "
            + "connectionName: \(connectionName ?? "nil"))"
    }
}
