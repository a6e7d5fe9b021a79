import Foundation
import Logging
import Metrics
import Prometheus
import RabbitMQ
import RabbitMQPatterns
import ServiceLifecycle
import UnixSignals

/// A small order service, meant to be copied: one `ServiceGroup` with
/// - the connection (first: it closes last),
/// - a pricing RPC server (`<prefix>.pricing`),
/// - a fulfilment worker on a retry queue (`<prefix>.fulfilment`),
/// - an audit log following `orders.#` on a topic exchange (`<prefix>.events`),
/// - the RPC client the publisher quotes prices with,
/// - the publisher, which places the orders.
///
/// Configuration comes from the environment (``OrderServiceConfiguration``), logs go to
/// standard error (swift-log), metrics to a Prometheus registry printed at exit, and its own
/// work runs in tracing spans (free while no tracer is bootstrapped). SIGTERM or SIGINT shut it
/// down gracefully: each service finishes the work in hand, in reverse order.
@main
struct OrderService {
    static func main() async {
        let configuration: OrderServiceConfiguration
        do {
            configuration = try OrderServiceConfiguration()
        } catch {
            FileHandle.standardError.write(Data("rabbitmq-example: \(error)\n".utf8))
            exit(2)
        }
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Prometheus names allow no dots: `rabbitmq.messages.published` becomes
        // `rabbitmq_messages_published`, `orders.placed` becomes `orders_placed`.
        factory.nameAndLabelSanitizer = { name, labels in
            (name.replacingOccurrences(of: ".", with: "_"),
             labels.map { ($0.0.replacingOccurrences(of: ".", with: "_"), $0.1) })
        }
        MetricsSystem.bootstrap(factory)

        let logger = Logger(label: "order-service")
        // Tells this run's orders from those an earlier run left in the durable queues.
        let runID = String(UUID().uuidString.lowercased().prefix(8))
        let tally = OrderTally(expected: configuration.orderCount, run: runID)
        do {
            try await run(configuration, tally: tally, logger: logger)
        } catch {
            logger.error("stopped", metadata: ["error": "\(error)"])
            printSummary(tally.counts)
            exit(1)
        }
        printSummary(tally.counts)
        if configuration.printMetrics {
            print("# Prometheus exposition")
            print(registry.emitToString(), terminator: "")
        }
        flushStandardOutput()
    }

    static func run(_ configuration: OrderServiceConfiguration, tally: OrderTally, logger: Logger) async throws {
        var connectionConfiguration = try RabbitMQConfiguration(uri: configuration.brokerURL)
        connectionConfiguration.connectionName = "order-service"
        connectionConfiguration.logger = logger
        let connection = try await RabbitMQConnection.connect(configuration: connectionConfiguration)

        // Topology first, so that nothing published is routed nowhere.
        let events = try await RabbitMQTopicExchange.declare(configuration.eventsExchange, on: connection)
        let audit = try await events.subscribe(Order.self, queue: configuration.auditQueue, patterns: ["orders.#"])
        let fulfilment = try await RabbitMQRetryQueue.declare(
            configuration.fulfilmentQueue, on: connection, configuration: .init(delays: [configuration.retryDelay]))
        let pricing = RabbitMQRPCClient(connection: connection)
        // The pricing server declares its queue when it starts, which may be after the
        // publisher's first call: a request then finds no queue and fails as unroutable.
        // Declared here (as the server declares it: durable), an early request waits there.
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(configuration.pricingQueue, durable: true)
        try await setup.close()

        let pricingServer = RabbitMQRPCServer(connection: connection, queue: configuration.pricingQueue) {
            (request: PriceRequest) in
            PriceQuote.quote(request)
        }
        let worker = Fulfilment(failEvery: configuration.failEvery, tally: tally, logger: logger)
        let fulfilmentService = RabbitMQRetryQueueService(queue: fulfilment, payload: Order.self) { attempt in
            try worker.handle(attempt)
        }
        let auditLog = RabbitMQSubscriptionService(subscription: audit) { message in
            logger.debug("audit", metadata: ["order.id": "\(message.data.id)", "event.type": "\(message.envelope.type)"])
            tally.audited(message.data.id)
        }
        let publisher = OrderPublisher(
            configuration: configuration, pricing: pricing, events: events, fulfilment: fulfilment, tally: tally,
            logger: logger)

        // Graceful shutdown runs from the last service to the first, each finishing before the
        // next is asked: the publisher stops, the RPC client drains, the consumers finish
        // what they hold, and the connection closes last.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: connection, serviceName: "connection"),
                    .init(service: pricingServer, serviceName: "pricing"),
                    .init(service: fulfilmentService, serviceName: "fulfilment"),
                    .init(service: auditLog, serviceName: "audit"),
                    .init(service: pricing, serviceName: "pricing-client"),
                    // Done placing (and everything processed): shut the rest down.
                    .init(service: publisher, successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "publisher"),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        logger.info("running", metadata: ["orders.count": "\(configuration.orderCount)", "orders.prefix": "\(configuration.prefix)"])
        try await group.run()
    }

    static func printSummary(_ counts: OrderTally.Counts) {
        print(
            "orders: placed \(counts.placed), quoted \(counts.quoted), audited \(counts.audited), "
                + "fulfilled \(counts.fulfilled), retried \(counts.retried)")
    }
}
