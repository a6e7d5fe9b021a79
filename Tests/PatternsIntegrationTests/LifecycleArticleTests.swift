import Logging
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import ServiceLifecycle
import Testing
import UnixSignals

// The code samples of the DocC article "Services and graceful shutdown"
// (Sources/RabbitMQ/RabbitMQ.docc/ServiceLifecycle.md), verbatim, so that they compile. The
// ServiceGroup samples use the README's fixed names ("pricing", "events", "audit") and run
// until a signal, so they are compiled only; their behaviour is LifecycleTests'.

/// The sample's stand-in for real work.
func ship(_ order: OrderPlaced) async throws {}

func runPricingService(connection: RabbitMQConnection, logger: Logger) async throws {
    let server = RabbitMQRPCServer(connection: connection, queue: "pricing") { (request: PriceRequest) in
        Price(sku: request.sku, cents: 250)
    }
    let client = RabbitMQRPCClient(connection: connection)
    // Shut down from the last to the first: the client drains, the server answers what it
    // holds, then the connection closes. Should the connection's run() return first (the
    // application closed it), the others are shut down gracefully, not cancelled.
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [
                .init(service: connection, successTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: server),
                .init(service: client),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
    try await group.run()
}

func runOrderConsumers(connection: RabbitMQConnection, logger: Logger) async throws {
    let events = try await RabbitMQTopicExchange.declare("events", on: connection)
    let audit = try await events.subscribe(OrderPlaced.self, queue: "audit", patterns: ["orders.#"])
    let auditor = RabbitMQSubscriptionService(subscription: audit) { message in
        logger.info("order placed", metadata: ["order": "\(message.data.orderID)"])
    }
    let fulfilment = try await RabbitMQRetryQueue.declare("fulfilment", on: connection)
    let worker = RabbitMQRetryQueueService(queue: fulfilment, payload: OrderPlaced.self) { attempt in
        try await ship(attempt.data)
    }
    let group = ServiceGroup(
        services: [connection, auditor, worker],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger)
    try await group.run()
}

func queueDepth(configuration: RabbitMQConfiguration) async throws -> UInt32 {
    try await RabbitMQConnection.withConnection(configuration: configuration) { connection in
        let channel = try await connection.openChannel()
        return try await channel.queueDeclare("orders", durable: true).messageCount
    }
}

@Suite("Article: services and graceful shutdown", .timeLimit(.minutes(5)))
struct LifecycleArticleTests {
    /// The scoped-connection sample runs, in the scratch virtual host (its "orders" queue is
    /// an everyday name that a broker the tests are pointed at may hold; the core's
    /// documentation test publishes to a queue of that name there too, so no depth is
    /// expected).
    @Test func queueDepthRunsInAScopedConnection() async throws {
        _ = try await TestBroker.withScratchVirtualHost { configuration in
            try await queueDepth(configuration: configuration)
        }
    }
}
