import Foundation
import RabbitMQ
import Synchronization
import Tracing

/// Answers RPC requests from a queue: runs a handler for each request and publishes its result
/// to the request's reply-to address with the request's correlation id.
///
/// A handler that throws produces the reply `{"error": "<message>", "success": false}` with
/// the header `x-rpc-error: true`, which ``RabbitMQRPCClient`` raises as a `remoteError` (and
/// any other client can recognise). The message is the handler's choice when it throws
/// ``RabbitMQPatternsError/permanentFailure(_:file:line:)``, and a fixed text for any other
/// error, whose description may say more than a caller should know (see
/// ``Configuration/repliesWithErrorDescriptions``).
/// A request is acknowledged after its reply is sent; a server that dies mid-request leaves
/// it to be redelivered, and so does a handler that throws `CancellationError` (it was
/// stopped): its request stays unacknowledged until the server stops, then returns to the
/// queue. Requests without a reply-to address are dropped.
///
/// ```swift
/// let server = RabbitMQRPCServer(connection: connection, queue: "pricing") { (request: PriceRequest) in
///     Price(sku: request.sku, cents: try await catalog.price(of: request.sku))
/// }
/// try await server.run()  // until the task is cancelled
/// ```
public struct RabbitMQRPCServer: Sendable {
    /// The connection the server consumes on.
    public let connection: RabbitMQConnection
    /// The request queue.
    public let queue: String
    /// How requests are taken.
    public let configuration: Configuration
    private let handler: @Sendable (RabbitMQRPCRequest) async throws -> RPCReplyBody

    /// A server whose handler turns request bytes into reply bytes.
    public init(
        connection: RabbitMQConnection, queue: String, configuration: Configuration = .init(),
        handler: @escaping @Sendable (RabbitMQRPCRequest) async throws -> [UInt8]
    ) {
        self.connection = connection
        self.queue = queue
        self.configuration = configuration
        self.handler = { request in RPCReplyBody(body: try await handler(request), contentType: nil) }
    }

    /// A server whose handler takes and returns `Codable` values as JSON. A request that does
    /// not decode as `Request` gets an error reply naming the field.
    public init<Request: Decodable & Sendable, Response: Encodable & Sendable>(
        connection: RabbitMQConnection, queue: String, configuration: Configuration = .init(),
        handler: @escaping @Sendable (Request) async throws -> Response
    ) {
        self.connection = connection
        self.queue = queue
        self.configuration = configuration
        self.handler = { request in
            let decoded: Request
            do {
                decoded = try EnvelopeJSON.decoder().decode(Request.self, from: Data(request.body))
            } catch {
                throw RPCInvalidRequest(reason: EnvelopeJSON.patternsError(error).message)
            }
            let response = try await handler(decoded)
            return RPCReplyBody(body: Array(try EnvelopeJSON.encoder().encode(response)), contentType: "application/json")
        }
    }

    /// Consumes the request queue and answers requests until the task is cancelled, the
    /// ``Configuration/requestLimit`` is reached, or the channel or connection fails.
    /// Requests not yet answered when it stops are requeued for other servers.
    ///
    /// On graceful shutdown (in a `ServiceGroup`, the server is a `Service`) it stops taking
    /// requests (`basic.cancel`), answers and acknowledges those already received, and
    /// returns.
    ///
    /// - Throws: `RabbitMQError` when the queue cannot be declared or consumed, or the
    ///   channel fails.
    public func run() async throws {
        guard configuration.concurrency > 0 else {
            throw RabbitMQPatternsError.invalidConfiguration("concurrency must be at least 1")
        }
        let channel = try await connection.openChannel()
        do {
            try await serve(on: channel)
        } catch {
            try? await channel.close()
            if error is CancellationError { return }
            throw error
        }
        try? await channel.close()
    }

    private func serve(on channel: RabbitMQChannel) async throws {
        if configuration.declareQueue {
            try await channel.queueDeclare(queue, durable: configuration.durable)
        }
        try await channel.qos(prefetchCount: configuration.concurrency)
        let consumer = try await channel.consume(queue: queue)
        let started = Atomic<Int>(0)
        let limit = configuration.requestLimit
        // Graceful shutdown cancels the consumer: the requests in hand are answered and
        // acknowledged, then the loop and the group end.
        try await consumer.stoppingOnGracefulShutdown {
            try await withThrowingDiscardingTaskGroup { group in
                for try await delivery in consumer {
                    // A failed reply (its channel is gone) cancels the group: stop taking requests.
                    if group.isCancelled { break }
                    if let limit, started.add(1, ordering: .relaxed).newValue > limit {
                        // Beyond the limit: leave it unacknowledged; closing the channel requeues it.
                        continue
                    }
                    group.addTask {
                        do {
                            try await connection.tracingProcess(of: delivery, queue: queue) { span in
                                try await answer(delivery, on: channel, span: span)
                            }
                        } catch {
                            // A reply that cannot be sent stops the server at once (the loop may
                            // wait for a request that never comes); run() ends with the error and
                            // the broker requeues what is unacknowledged.
                            consumer.stop(throwing: error)
                            throw error
                        }
                    }
                    if let limit, started.load(ordering: .relaxed) >= limit {
                        try await consumer.cancel()
                    }
                }
            }
        }
    }

    /// The text an error reply carries: what the handler chose (a `permanentFailure`), what
    /// the server found wrong with the request, or a fixed text, since an arbitrary error's
    /// description may say more than the caller should know.
    func errorMessage(for error: any Error) -> String {
        switch error {
        case let failure as RabbitMQPatternsError where failure.code == .permanentFailure: failure.message
        case let invalid as RPCInvalidRequest: "invalid request: \(invalid.reason)"
        default: configuration.repliesWithErrorDescriptions ? ErrorText.describe(error) : Self.genericFailure
        }
    }

    /// The error reply's text for a handler error other than a `permanentFailure`.
    static let genericFailure = "the server could not handle the request"

    /// Runs the handler and publishes its reply; `span` (nil without a tracer) is the
    /// request's process span, current here, so the reply carries the trace back.
    private func answer(_ delivery: RabbitMQDelivery, on channel: RabbitMQChannel, span: (any Span)?) async throws {
        guard let replyTo = delivery.properties.replyTo, !replyTo.isEmpty else {
            // Nobody to answer; requeueing would only bring it back.
            try delivery.reject(requeue: false)
            return
        }
        let request = RabbitMQRPCRequest(
            body: delivery.body, properties: delivery.properties, redelivered: delivery.redelivered)
        var properties = RabbitMQProperties(correlationID: delivery.properties.correlationID)
        let reply: [UInt8]
        do {
            let result = try await handler(request)
            reply = result.body
            properties.contentType = result.contentType
        } catch {
            // Shutting down (or the handler says it was stopped): leave the request to be
            // requeued rather than answer "cancelled".
            if Task.isCancelled || error is CancellationError { return }
            span?.recordFailure(error)
            reply = RPCErrorReply.encode(errorMessage(for: error))
            properties.contentType = "application/json"
            properties.headers = RPCErrorReply.headers
        }
        try await channel.publish(reply, routingKey: replyTo, properties: properties)
        try delivery.ack()
    }
}
