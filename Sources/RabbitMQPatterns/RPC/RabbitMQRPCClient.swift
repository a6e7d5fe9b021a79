import Foundation
import Synchronization
import RabbitMQ

/// Calls RPC servers over RabbitMQ: publishes a request with a fresh correlation id and a
/// reply-to address, and returns the reply to that request, or fails when none comes in time.
///
/// - Replies come back through direct reply-to by default (``ReplyQueue``): consumed with
///   auto-ack on the channel that publishes the requests, as RabbitMQ requires.
/// - Any number of calls may be in flight at once, from any tasks; each reply goes to the call
///   with its correlation id. A reply that arrives after its call timed out is discarded
///   (``discardedReplies``), never given to another call.
/// - Requests are mandatory: a call to a routing key with no queue fails at once with
///   `unroutable` instead of waiting for its timeout. They expire with their timeout, so the
///   broker drops a request whose caller has given up.
/// - A reply `{"error": "...", "success": false}` (what ``RabbitMQRPCServer`` sends when its
///   handler fails) is thrown as a `remoteError`.
///
/// The client is a service: ``run()`` owns its channel and reply consumer and must be running
/// for calls to complete. ``withClient(connection:configuration:_:)`` does that for a scope:
///
/// ```swift
/// let price = try await RabbitMQRPCClient.withClient(connection: connection) { rpc in
///     try await rpc.call(PriceRequest(sku: "A-1"), routingKey: "pricing", as: Price.self)
/// }
/// ```
public final class RabbitMQRPCClient: Sendable {
    /// The connection calls go over.
    public let connection: RabbitMQConnection
    /// How requests are sent and replies awaited.
    public let configuration: Configuration
    private let registry = RPCCallRegistry()
    /// Correlation ids are this random prefix and a counter: unique for the client's life,
    /// so a late reply can never match a later call, and much cheaper than a UUID per call.
    private let correlationPrefix = UUID().uuidString.lowercased() + "-"
    private let nextCall = Atomic<UInt64>(0)

    /// Creates a client; nothing happens on the broker until ``run()``.
    public init(connection: RabbitMQConnection, configuration: Configuration = .init()) {
        self.connection = connection
        self.configuration = configuration
    }

    /// Runs `body` with a client whose ``run()`` runs alongside it, then stops the client.
    /// `body` starts once the client is ready (its channel open and its reply consumer
    /// registered), so its calls do not spend their timeouts on the set-up.
    ///
    /// The client belongs to the scope: it does not drain when a service around it (say, the
    /// handler of a service in a `ServiceGroup`) shuts down gracefully, so `body` can still
    /// make its calls then; it stops when `body` ends.
    ///
    /// - Throws: the error of `body`, or `RabbitMQError` when the client cannot be set up.
    public static func withClient<Result: Sendable>(
        connection: RabbitMQConnection, configuration: Configuration = .init(),
        _ body: (RabbitMQRPCClient) async throws -> Result
    ) async throws -> Result {
        let client = RabbitMQRPCClient(connection: connection, configuration: configuration)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run(drainsOnGracefulShutdown: false) }
            do {
                _ = try await client.registry.ready()
            } catch {
                // The set-up failed: run() ends with the reason (the registry's error only
                // says that the client stopped).
                group.cancelAll()
                try await group.next()
                throw error
            }
            do {
                let result = try await body(client)
                group.cancelAll()
                return result
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }

    /// How many replies were dropped because no call was waiting for them (late replies to
    /// calls that timed out, or replies with an unknown correlation id).
    public var discardedReplies: Int { registry.discardedReplies }

    /// How many calls are waiting for their replies right now.
    public var callsInFlight: Int { registry.inFlight }

    /// Opens the client's channel, starts consuming replies, and dispatches them until the
    /// task is cancelled or the channel or connection closes. Calls made before it is ready
    /// wait for it. When it ends, calls in flight and later calls fail with `closed`.
    /// Call it once.
    ///
    /// On graceful shutdown (in a `ServiceGroup`: the client is a `Service`) new calls fail
    /// with `closed` at once, and it returns once every call in flight has its reply or has
    /// timed out.
    ///
    /// - Throws: `RabbitMQError` when the channel or consumer cannot be set up or fails.
    public func run() async throws {
        try await run(drainsOnGracefulShutdown: true)
    }

    /// ``run()``; without `drainsOnGracefulShutdown`, only cancellation (or a failure) ends
    /// it. A scoped client runs so: the graceful-shutdown signal is a task-local that its task
    /// inherits from whatever service it runs in.
    func run(drainsOnGracefulShutdown: Bool) async throws {
        try registry.beginStarting()
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // One timer for every call, across the client's channels: a call keeps its
                // deadline while a channel the broker closed is replaced.
                group.addTask { [registry] in await registry.runTimer() }
                group.addTask { [registry] in
                    guard drainsOnGracefulShutdown else {
                        // Ends the client on cancellation, like the shutdown wait below.
                        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                        return
                    }
                    // Graceful shutdown: refuse new calls, wait for the replies of those in
                    // flight (or their timeouts), then end the client.
                    guard await gracefulShutdownOrCancellation() == .gracefulShutdown else { return }
                    registry.beginDraining()
                    await registry.drained()
                }
                group.addTask { try await self.serveChannels() }
                // Whichever ends first (the channels, normally) ends the client.
                try await group.next()
                group.cancelAll()
            }
        } catch {
            registry.finish(RabbitMQPatternsError(code: .closed, message: "the RPC client stopped: \(error)"))
            if error is CancellationError { return }
            throw error
        }
        registry.finish(RabbitMQPatternsError(code: .closed, message: "the RPC client stopped"))
    }

    /// Serves on one channel after another: when the broker closes the client's channel (a
    /// request it refused: an exchange that does not exist, a body over its size limit), the
    /// calls that went with it fail with the broker's reason and the client opens a new one.
    /// Returns when the client ends; throws when a channel cannot be set up, or the
    /// connection closed.
    private func serveChannels() async throws {
        while true {
            let channel = try await connection.openChannel()
            let refused: RabbitMQError?
            do {
                refused = try await serve(on: channel)
            } catch {
                try? await channel.close()
                throw error
            }
            guard let refused else {
                try? await channel.close()
                return
            }
            // The broker closed the channel with the requests in flight on it: nothing tells the
            // one it refused from the others, and with direct reply-to their replies could no
            // longer arrive, so they all fail with its reason, at once rather than at their
            // timeouts. Calls from now on go out on the next channel.
            registry.channelClosed(
                ObjectIdentifier(channel),
                error: RabbitMQPatternsError(
                    code: .closed,
                    message: "the broker closed the RPC client's channel with this call's request in flight "
                        + "(\(refused)): the request may or may not have been handled"))
            try? await channel.close()
        }
    }

    /// Consumes replies on `opened` and dispatches them until the client ends (nil) or the
    /// broker closes this channel while the connection stays open (the broker's error).
    private func serve(on opened: RabbitMQChannel) async throws -> RabbitMQError? {
        let returns = opened.returnedMessages()
        let consumer: RabbitMQConsumer
        let replyTo: String
        // Replies are routed to their callers on the connection's I/O thread (a lock and
        // a continuation resume): one thread hand-off per reply, not two.
        let route: @Sendable (RabbitMQDelivery) -> Void = { [registry] reply in
            if let id = reply.properties.correlationID {
                registry.resolve(id, with: .success(reply), isReply: true)
            } else {
                registry.discardReply()
            }
        }
        if configuration.replyQueue.isDirectReplyTo {
            replyTo = "amq.rabbitmq.reply-to"
            // Direct reply-to requires auto-ack, and a consumer before the first request.
            consumer = try await opened.consume(queue: replyTo, autoAck: true, handler: route)
        } else {
            // A name of our own, not a server-named one: recovery declares the queue
            // again under the same name, so the reply-to of later requests stays right.
            replyTo = "swift-rmq.rpc-reply." + correlationPrefix.dropLast()
            try await opened.queueDeclare(replyTo, exclusive: true)
            consumer = try await opened.consume(queue: replyTo, autoAck: true, exclusive: true, handler: route)
        }
        registry.setRunning(.init(channel: opened, replyTo: replyTo))
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Yields nothing (the handler gets the replies): ends when the consumer does.
                    for try await _ in consumer {}
                }
                group.addTask { [registry] in
                    for await returned in returns {
                        guard let id = returned.properties.correlationID else { continue }
                        let error = RabbitMQPatternsError(
                            code: .unroutable,
                            message: "no queue is bound to exchange '\(returned.exchange)' for key "
                                + "'\(returned.routingKey)': is the RPC server running?")
                        registry.resolve(id, with: .failure(error), isReply: false)
                    }
                }
                // The consumer ends first (the returns end only when cancelled).
                try await group.next()
                group.cancelAll()
            }
        } catch {
            if let refused = refusal(closing: opened) { return refused }
            throw error
        }
        // The consumer may end without an error of its own when its channel closes.
        return refusal(closing: opened)
    }

    /// The broker's reason when it closed `channel` alone (the connection is open, and the
    /// client is not being cancelled), else nil.
    private func refusal(closing channel: RabbitMQChannel) -> RabbitMQError? {
        guard !Task.isCancelled, connection.isOpen, let reason = channel.closeReason, reason.scope == .channel,
            reason.replyText != nil
        else {
            return nil
        }
        return reason
    }

    /// Sends `body` as a request and returns the reply.
    ///
    /// - Parameters:
    ///   - body: The request body.
    ///   - routingKey: Where to send it; with the default exchange, the server's queue name.
    ///   - timeout: How long to wait for the reply. Default: ``Configuration/timeout``.
    ///   - properties: Request properties to send (headers, content type...); correlation id,
    ///     reply-to and expiration are set by the client.
    /// - Returns: The reply delivery (already acknowledged).
    /// - Throws: ``RabbitMQPatternsError``: `timeout`, `unroutable`, `remoteError` (with the
    ///   server's error text), `closed` (the client is not running); `RabbitMQError`.
    public func call(
        _ body: [UInt8], routingKey: String, timeout: Duration? = nil, properties: RabbitMQProperties = .init()
    ) async throws -> RabbitMQDelivery {
        // One client span around the round trip: the request's publish is its child, and the
        // server's handling and reply follow from there, so a call is one trace.
        try await connection.tracingCall(exchange: configuration.exchange, routingKey: routingKey) {
            try await untracedCall(body, routingKey: routingKey, timeout: timeout, properties: properties)
        }
    }

    private func untracedCall(
        _ body: [UInt8], routingKey: String, timeout: Duration?, properties: RabbitMQProperties
    ) async throws -> RabbitMQDelivery {
        let timeout = timeout ?? configuration.timeout
        guard timeout > .zero else { throw RabbitMQPatternsError.invalidConfiguration("the timeout must be positive") }
        let deadline = RPCCallRegistry.Deadline(instant: .now + timeout, routingKey: routingKey, timeout: timeout)
        let reply: RabbitMQDelivery
        if let link = registry.runningLink {
            // The usual case: the client runs, and its timer task enforces the deadline.
            reply = try await send(body, on: link, routingKey: routingKey, timeout: timeout, deadline: deadline, properties: properties)
        } else {
            reply = try await callWhenReady(body, routingKey: routingKey, timeout: timeout, deadline: deadline, properties: properties)
        }
        // Only the server's own error replies (marked so) are errors: any other reply,
        // `{"success": false}` included, is the caller's to read.
        if let message = RPCErrorReply.decode(reply) {
            throw RabbitMQPatternsError(code: .remoteError, message: message)
        }
        return reply
    }

    /// A call made before the client is running: it waits for the client within its timeout.
    private func callWhenReady(
        _ body: [UInt8], routingKey: String, timeout: Duration, deadline: RPCCallRegistry.Deadline,
        properties: RabbitMQProperties
    ) async throws -> RabbitMQDelivery {
        try await withThrowingTaskGroup(of: RabbitMQDelivery.self) { group in
            group.addTask {
                let link = try await self.registry.ready()
                return try await self.send(
                    body, on: link, routingKey: routingKey, timeout: timeout, deadline: deadline, properties: properties)
            }
            group.addTask {
                try await Task.sleep(until: deadline.instant, clock: .continuous)
                throw RPCCallRegistry.timeoutError(deadline)
            }
            defer { group.cancelAll() }
            // The first child to finish decides; cancelling the other removes the call's slot.
            guard let first = try await group.next() else { throw CancellationError() }
            return first
        }
    }

    /// Sends `request` as JSON and decodes the JSON reply as `Response`.
    ///
    /// ```swift
    /// let price = try await rpc.call(PriceRequest(sku: "A-1"), routingKey: "pricing", as: Price.self)
    /// ```
    /// - Throws: as ``call(_:routingKey:timeout:properties:)``, and `invalidReply` when the
    ///   reply does not decode as `Response`.
    public func call<Request: Encodable & Sendable, Response: Decodable>(
        _ request: Request, routingKey: String, as responseType: Response.Type = Response.self,
        timeout: Duration? = nil
    ) async throws -> Response {
        let body = Array(try EnvelopeJSON.encoder().encode(request))
        let reply = try await call(
            body, routingKey: routingKey, timeout: timeout,
            properties: RabbitMQProperties(contentType: "application/json", contentEncoding: "utf-8"))
        do {
            return try EnvelopeJSON.decoder().decode(Response.self, from: Data(reply.body))
        } catch {
            let reason = EnvelopeJSON.patternsError(error)
            throw RabbitMQPatternsError(
                code: .invalidReply, message: "the reply is not a \(Response.self): \(reason.message)", field: reason.field)
        }
    }

    private func send(
        _ body: [UInt8], on link: RPCCallRegistry.Link, routingKey: String, timeout: Duration,
        deadline: RPCCallRegistry.Deadline, properties: RabbitMQProperties
    ) async throws -> RabbitMQDelivery {
        let id = correlationPrefix + String(nextCall.add(1, ordering: .relaxed).newValue)
        var properties = properties
        properties.correlationID = id
        properties.replyTo = link.replyTo
        if configuration.expireRequests {
            // At least 1 ms: "0" would expire a request before any consumer could see it.
            properties.expiration = String(max(1, timeout.wholeMilliseconds))
        }
        try registry.register(id, deadline: deadline, channel: ObjectIdentifier(link.channel))
        do {
            // The call's timeout covers the publish: during an outage it waits for the
            // connection at most until the call's deadline, and is never sent after it.
            try await link.channel.publish(
                body, exchange: configuration.exchange, routingKey: routingKey, properties: properties, mandatory: true,
                deadline: deadline.instant)
        } catch let error as RabbitMQError where error.code == .timeout {
            registry.remove(id)
            throw RPCCallRegistry.timeoutError(deadline)
        } catch {
            registry.remove(id)
            throw error
        }
        return try await registry.wait(id)
    }

    static func describe(_ duration: Duration) -> String {
        let milliseconds = duration.wholeMilliseconds
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}
