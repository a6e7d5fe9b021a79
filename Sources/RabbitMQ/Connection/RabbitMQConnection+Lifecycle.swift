import Logging
import ServiceLifecycle

/// The connection as a ServiceLifecycle `Service`, and a scoped connection.
///
/// A connection's I/O thread runs from ``connect(configuration:)`` on; `run()` adds no work
/// of its own. It holds the connection for a `ServiceGroup` and closes it when the group shuts
/// down. A group shuts its services down one at a time in reverse order, waiting for each, so
/// put the connection *first*, before the services that use it: it then closes last, after
/// they have finished their work in hand and acknowledged it.
///
/// ```swift
/// let group = ServiceGroup(
///     services: [connection, server],  // the connection first: it closes last
///     gracefulShutdownSignals: [.sigterm, .sigint],
///     logger: logger)
/// try await group.run()
/// ```
extension RabbitMQConnection: Service {
    /// Holds the connection until graceful shutdown or cancellation, then closes it
    /// (``close()``: queued publishes are sent and outstanding confirms awaited).
    ///
    /// Returns early when the application closes the connection itself.
    ///
    /// - Throws: ``RabbitMQError``: why the connection closed for good (recovery gave up, or
    ///   it is off), or why ``close()`` failed.
    public func run() async throws {
        let events = events()
        let stop = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                _ = await gracefulShutdownOrCancellation()
                return true
            }
            group.addTask {
                // Ends when the connection has closed.
                for await _ in events {}
                return false
            }
            let first = await group.next() ?? true
            group.cancelAll()
            return first
        }
        // Cancellation ends the event stream as well as the wait for shutdown, so the child
        // that finished first does not say why: a connection that is still open was not
        // closed for good, and is closed here.
        if stop || closeReason == nil {
            try await close()
        } else if let reason = closeReason, reason.code != .closed {
            throw reason
        }
    }

    /// Connects, runs `body` with the connection, and closes it however `body` ends: when it
    /// returns, throws, or its task is cancelled.
    ///
    /// ```swift
    /// let depth = try await RabbitMQConnection.withConnection(configuration: configuration) { connection in
    ///     let channel = try await connection.openChannel()
    ///     return try await channel.queueDeclare("orders", durable: true).messageCount
    /// }
    /// ```
    ///
    /// - Returns: What `body` returns.
    /// - Throws: The connection's errors (see ``connect(configuration:)``), what `body`
    ///   throws, or ``RabbitMQError`` when closing after a successful `body` fails (a close
    ///   after a failed `body` is best effort: its error is `body`'s).
    public static func withConnection<Result>(
        configuration: RabbitMQConfiguration, _ body: (RabbitMQConnection) async throws -> Result
    ) async throws -> Result {
        try await withConnection(try await connect(configuration: configuration), body)
    }

    /// As ``withConnection(configuration:_:)``, from an `amqp://` or `amqps://` URI (see
    /// ``RabbitMQConfiguration/init(uri:)``).
    public static func withConnection<Result>(
        uri: String, logger: Logger? = nil, _ body: (RabbitMQConnection) async throws -> Result
    ) async throws -> Result {
        try await withConnection(try await connect(uri: uri, logger: logger), body)
    }

    private static func withConnection<Result>(
        _ connection: RabbitMQConnection, _ body: (RabbitMQConnection) async throws -> Result
    ) async throws -> Result {
        let result: Result
        do {
            result = try await body(connection)
        } catch {
            // close() does not look at cancellation: a cancelled task still closes cleanly.
            try? await connection.close()
            throw error
        }
        try await connection.close()
        return result
    }
}
