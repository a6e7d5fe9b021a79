import Logging
import Synchronization

/// A connection to a RabbitMQ broker.
///
/// Each connection owns one I/O thread that is the only caller of rabbitmq-c for it: it
/// reads every frame, services heartbeats (even while your code is busy elsewhere), and
/// sends what the channels ask for. Public methods never block Swift's cooperative thread
/// pool; they suspend until the I/O thread answers.
///
/// ```swift
/// let connection = try await RabbitMQConnection.connect(uri: "amqp://guest:guest@127.0.0.1:5672/")
/// let channel = try await connection.openChannel()
/// // ...
/// try await connection.close()
/// ```
///
/// A lost connection recovers by itself (``RabbitMQConfiguration/recovery``): it reconnects,
/// walking the configured endpoints, and restores channels, topology and consumers; follow
/// it with ``events()``.
///
/// Close connections you open: ``close()`` flushes queued publishes, waits for outstanding
/// confirms and the broker's `close-ok`. A connection released without `close()` is closed
/// in the background.
public final class RabbitMQConnection: Sendable {
    let core: ConnectionCore
    /// The connection's I/O thread as a task executor: see ``RabbitMQConnectionExecutor``.
    public let executor: RabbitMQConnectionExecutor
    /// The tracer, resolved when the connection opened; nil (the usual case) when there is
    /// none, which is all the publish path checks (see ``ConnectionTracing``).
    let tracing: ConnectionTracing?
    private static let counter = Atomic<UInt64>(0)

    private init(core: ConnectionCore, executor: RabbitMQConnectionExecutor, tracing: ConnectionTracing?) {
        self.core = core
        self.executor = executor
        self.tracing = tracing
    }

    deinit {
        // Only enqueues: the C handle belongs to the I/O thread.
        core.submitIfRunning(.close(nil))
    }

    /// Opens a connection: TCP (or TLS) to the first endpoint that answers, then the AMQP
    /// handshake and PLAIN login.
    ///
    /// - Throws: ``RabbitMQError``: `invalidConfiguration`, `connectFailed` (naming every
    ///   endpoint tried, never the password), `authenticationFailed` (wrong credentials),
    ///   `notAllowed` (unknown virtual host), `timeout`.
    public static func connect(configuration: RabbitMQConfiguration) async throws -> RabbitMQConnection {
        try configuration.validate()
        let id = counter.add(1, ordering: .relaxed).newValue
        let name = configuration.connectionName ?? "connection-\(id)"
        let wake = try IOLoop.makeWakeDescriptor()
        let core = ConnectionCore(configuration: configuration, id: id, name: name, wakeDescriptor: wake)
        let executor = RabbitMQConnectionExecutor(core: core)
        defer { SanitizerSync.acquire(core) }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            IOLoop.start(core: core, executor: executor, onConnect: continuation)
        }
        return RabbitMQConnection(
            core: core, executor: executor, tracing: ConnectionTracing.resolve(configuration.tracer, core: core))
    }

    /// Opens a connection from an `amqp://` or `amqps://` URI; see
    /// ``RabbitMQConfiguration/init(uri:)`` and ``connect(configuration:)``.
    public static func connect(uri: String, logger: Logger? = nil) async throws -> RabbitMQConnection {
        var configuration = try RabbitMQConfiguration(uri: uri)
        if let logger { configuration.logger = logger }
        return try await connect(configuration: configuration)
    }

    /// The connection's name (``RabbitMQConfiguration/connectionName`` or a generated one).
    public var name: String { core.name }

    /// Whether the connection is open: not closed, nor closing (also while it recovers; see
    /// ``isRecovering``).
    public var isOpen: Bool { core.isOpen }

    /// Whether the connection was lost and recovery is under way.
    public var isRecovering: Bool { core.isRecovering }

    /// Why the connection closed, once it has (code `closed` after ``close()``).
    public var closeReason: RabbitMQError? { core.terminalError }

    /// The endpoint this connection is connected to.
    public var endpoint: RabbitMQConfiguration.Endpoint? { core.negotiated.endpoint }

    /// The heartbeat interval agreed with the broker, in seconds (0: off).
    public var negotiatedHeartbeat: Int { core.negotiated.heartbeat }

    /// The frame size agreed with the broker, in bytes.
    public var negotiatedFrameMax: Int { core.negotiated.frameMax }

    /// The channel limit agreed with the broker.
    public var negotiatedChannelMax: Int { core.negotiated.channelMax }

    /// The broker's server properties (product, version, capabilities, cluster name).
    public var serverProperties: RabbitMQFieldTable { core.negotiated.serverProperties }

    /// The logger of ``RabbitMQConfiguration/logger``, with the connection's name in its
    /// metadata: for layers on top (the patterns) to log where the connection does.
    public var logger: Logger { core.logger }

    /// The name a queue has now: recovery re-declares a server-named queue (`amq.gen-...`)
    /// under a new name, and publishers that route to it by name should follow. Returns
    /// `name` unchanged for any other queue.
    public func currentName(ofQueue name: String) -> String {
        core.currentName(ofQueue: name)
    }

    /// A new subscription to this connection's events (disconnected, recovery attempts,
    /// recovered, queue renamed, blocked, unblocked, closed). Each call
    /// returns an independent sequence that buffers the newest 256 events and never slows
    /// the connection down. It ends when the connection closes.
    public func events() -> AsyncStream<RabbitMQConnectionEvent> {
        core.makeEventStream()
    }

    /// Opens a new channel (the lowest free channel number).
    public func openChannel() async throws -> RabbitMQChannel {
        let number = try core.allocateChannel()
        let shared = ChannelShared(number: number, core: core)
        try await core.callVoid({ .openChannel(shared, $0) }, refused: { _ in core.releaseChannel(number) })
        return RabbitMQChannel(connection: self, shared: shared)
    }

    /// Refreshes the secret (password, or OAuth2 token) the connection logs in with, without
    /// reconnecting: the broker re-authenticates the open connection (`connection.update-secret`),
    /// and every later login, recovery's included, uses the new secret.
    ///
    /// With rabbitmq-c before 0.12 (Debian 12 ships 0.11), which cannot read the broker's
    /// answer, nothing is sent: the secret is kept for the next login and the result says so
    /// (a broker that closes the connection when the old token expires is then answered by a
    /// recovery with the new one). The same while the connection is recovering.
    ///
    /// - Parameters:
    ///   - secret: The new password or token; never logged.
    ///   - reason: Why, for the broker's log (at most 255 bytes).
    /// - Returns: `.applied` once the broker took it on the open connection, `.nextLogin` when
    ///   it was only kept for the next login (including when the connection was lost before
    ///   the broker answered).
    /// - Throws: ``RabbitMQError``: `invalidConfiguration` for a secret that cannot be sent
    ///   (with NUL bytes, too large for a frame, or with EXTERNAL authentication, which has
    ///   none); `timeout` when the broker does not answer within the request timeout, which
    ///   stands still while the broker blocks the connection, as for every request (the
    ///   secret is kept for the next login all the same); the broker's error when it refuses
    ///   the secret (530 NOT_ALLOWED: it closes the connection, for good, as for any refused
    ///   login); `closed` once the connection is closed.
    @discardableResult
    public func updateSecret(_ secret: String, reason: String) async throws -> RabbitMQSecretUpdate {
        guard core.configuration.authenticationMechanism == .plain else {
            throw RabbitMQError.invalidConfiguration("EXTERNAL authentication has no secret to update")
        }
        guard !secret.utf8.contains(0) else { throw RabbitMQError.invalidConfiguration("the secret cannot contain NUL bytes") }
        guard reason.utf8.count <= 255 else {
            throw RabbitMQError.invalidConfiguration("the reason is \(reason.utf8.count) bytes long; AMQP allows at most 255")
        }
        // Frame header and end, method id, the two lengths: 20 bytes around the strings.
        guard secret.utf8.count + reason.utf8.count + 20 <= (negotiatedFrameMax > 0 ? negotiatedFrameMax : core.configuration.frameMax) else {
            throw RabbitMQError.invalidConfiguration("the secret does not fit in one frame (frame_max \(negotiatedFrameMax))")
        }
        guard case .secretUpdate(let update) = try await core.call({ .updateSecret(secret, reason: reason, $0) }) else {
            throw RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected answer to an update of the secret")
        }
        return update
    }

    /// Closes the connection gracefully: sends queued publishes, waits (up to
    /// ``RabbitMQConfiguration/closeTimeout``) for outstanding confirms and the broker's
    /// `close-ok`, ends every consumer sequence, and stops the I/O thread.
    /// Calling it again, or on a connection already closed, returns at once.
    public func close() async throws {
        if core.terminalError != nil { return }
        do {
            try await core.callVoid { .close($0) }
        } catch let error as RabbitMQError where core.terminalError != nil && error == core.terminalError {
            // Closed meanwhile (by another close, or for good after a failure): nothing to do.
        }
    }
}
