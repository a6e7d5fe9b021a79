import Logging
import RabbitMQPatterns
import Synchronization
import Tracing

/// Fulfils orders from the retry queue. Every `failEvery`-th order finds the warehouse busy on
/// its first attempt: the handler throws, the retry queue brings the order back after the
/// delay, and the second attempt succeeds, as a transient failure would in a real service.
struct Fulfilment: Sendable {
    let failEvery: Int
    let tally: OrderTally
    let logger: Logger

    /// Thrown on a first attempt that fails on purpose.
    struct WarehouseBusy: Error, CustomStringConvertible {
        var description: String { "the warehouse is busy" }
    }

    func handle(_ attempt: RabbitMQRetryAttempt<Order>) throws {
        try withSpan("orders.fulfil", ofKind: .consumer) { span in
            let order = attempt.data
            span.attributes["order.id"] = order.id
            span.attributes["order.attempt"] = attempt.attempt
            guard let number = tally.number(ofOwn: order.id) else {
                // Left by an earlier run: taken off the queue, not counted, never failed.
                logger.debug("fulfilled an order of an earlier run", metadata: ["order.id": "\(order.id)"])
                return
            }
            if attempt.attempt == 1, failEvery > 0, number % failEvery == 0 {
                tally.retried()
                logger.info(
                    "fulfilment failed, will retry",
                    metadata: ["order.id": "\(order.id)", "order.attempt": "\(attempt.attempt)"])
                throw WarehouseBusy()
            }
            tally.fulfilled(order.id)
            logger.debug("fulfilled", metadata: ["order.id": "\(order.id)", "order.attempt": "\(attempt.attempt)"])
        }
    }
}
