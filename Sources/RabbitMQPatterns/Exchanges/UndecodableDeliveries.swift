import Logging
import RabbitMQ
import Synchronization

/// What a subscription does besides rejecting a delivery that is not an envelope: count it,
/// log it at warning, and tell the application. Shared by the subscription and its iterators,
/// so the count is the subscription's whoever iterates.
final class UndecodableDeliveries: Sendable {
    private let seen = Atomic<Int>(0)
    private let logger: Logger
    private let callback: (@Sendable (RabbitMQUndecodableDelivery) -> Void)?

    init(logger: Logger, callback: (@Sendable (RabbitMQUndecodableDelivery) -> Void)?) {
        self.logger = logger
        self.callback = callback
    }

    /// How many there were so far.
    var count: Int { seen.load(ordering: .relaxed) }

    /// Records one, already rejected.
    func record(
        _ delivery: RabbitMQDelivery, error: RabbitMQPatternsError, queue: String, deadLetterQueue: String?
    ) {
        seen.add(1, ordering: .relaxed)
        logger.warning(
            "delivery is not a valid envelope; rejected to the dead-letter exchange",
            metadata: [
                LogKey.queue: "\(queue)",
                LogKey.deadLetterQueue: "\(deadLetterQueue ?? "-")",
                LogKey.error: "\(error.message)",
            ])
        callback?(RabbitMQUndecodableDelivery(delivery: delivery, error: error, queue: queue, deadLetterQueue: deadLetterQueue))
    }
}
