import RabbitMQ

extension RabbitMQConsumer {
    /// Runs `body`, which consumes this consumer, and on graceful shutdown cancels the
    /// consumer (`basic.cancel`) instead of the task.
    ///
    /// Cancelling the task would abandon the handlers in flight; cancelling the consumer only
    /// stops new deliveries. The loop in `body` then ends after the deliveries already
    /// received (at most the prefetch count), its handlers finish and acknowledge on the
    /// still-open channel, and `body` returns. Task cancellation still stops everything at
    /// once: the caller closes the channel and the broker requeues what is unacknowledged.
    func stoppingOnGracefulShutdown(_ body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                guard await gracefulShutdownOrCancellation() == .gracefulShutdown else { return }
                // A failure here means the channel is gone: the loop ends by itself.
                try? await self.cancel()
            }
            do {
                try await body()
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    }
}
