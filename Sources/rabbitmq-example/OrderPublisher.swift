import Logging
import RabbitMQPatterns
import ServiceLifecycle
import Tracing

/// Places the orders: asks the pricing service for a quote (RPC), announces the order on the
/// topic exchange (`orders.order.placed`, which the audit log follows), and queues its
/// fulfilment. Then it waits until every order is processed and returns, which shuts the
/// group down, or, with `keepRunning`, waits for SIGTERM / SIGINT.
///
/// On graceful shutdown it stops placing orders; the order in hand is finished. Cancelled
/// (another service failed), it stops at once, waiting or not.
struct OrderPublisher: Service {
    let configuration: OrderServiceConfiguration
    let pricing: RabbitMQRPCClient
    let events: RabbitMQTopicExchange
    let fulfilment: RabbitMQRetryQueue
    let tally: OrderTally
    let logger: Logger

    func run() async throws {
        print("orders: placing \(configuration.orderCount)")
        flushStandardOutput()
        for n in 1...configuration.orderCount {
            if Task.isShuttingDownGracefully { break }
            try await place(Order(id: tally.orderID(n), sku: "SKU-\(n % 7)", quantity: 1 + n % 3))
            if n % 100 == 0 {
                // Progress, for an operator (or a test waiting to signal a busy service).
                print("orders: \(n) placed")
                flushStandardOutput()
            }
        }
        logger.info("placed \(tally.counts.placed) orders", metadata: ["orders.count": "\(tally.counts.placed)"])
        // SIGTERM while waiting ends the wait: the group then shuts the others down in turn.
        // So does cancellation (the group cancels every service when one fails): the orders
        // would never all be processed then, and the group waits for this service to return.
        await withTaskCancellationOrGracefulShutdownHandler {
            await tally.waitUntilProcessed()
        } onCancelOrGracefulShutdown: {
            tally.stopWaiting()
        }
        try Task.checkCancellation()
        if !Task.isShuttingDownGracefully {
            let counts = tally.counts
            // A line a test (or an operator) can wait for.
            print("orders: all \(counts.placed) processed")
            flushStandardOutput()
            if configuration.keepRunning { try? await gracefulShutdown() }
        }
    }

    private func place(_ order: Order) async throws {
        try await withSpan("orders.place", ofKind: .producer) { span in
            span.attributes["order.id"] = order.id
            var order = order
            let quote = try await pricing.call(
                PriceRequest(sku: order.sku, quantity: order.quantity), routingKey: configuration.pricingQueue,
                as: PriceQuote.self)
            tally.quoted()
            order.totalCents = quote.totalCents
            try await events.publish(RabbitMQEnvelope(type: "orders.order.placed", data: order))
            try await fulfilment.publish(RabbitMQEnvelope(type: "orders.order.fulfil", data: order))
            tally.placed()
            logger.debug("placed", metadata: ["order.id": "\(order.id)", "order.total_cents": "\(order.totalCents)"])
        }
    }
}
