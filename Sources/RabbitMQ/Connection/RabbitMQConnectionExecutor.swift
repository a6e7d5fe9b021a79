/// A connection's I/O thread as a task executor (SE-0417): a task that prefers it runs its
/// nonisolated code on the thread that reads and writes the connection's socket.
///
/// A round trip (a publish that waits for its confirm, an RPC call) then happens on one
/// thread, as in a plain rabbitmq-c program: the I/O thread reads the broker's answer,
/// resumes the waiting task in the same turn, and sends its next request without waking
/// anyone. Without it, every round trip crosses threads twice: the request wakes the I/O
/// thread, the answer wakes a thread of the cooperative pool.
///
/// ```swift
/// try await withTaskExecutorPreference(connection.executor) {
///     for order in orders {
///         try await channel.publishAndWaitForConfirm(order.body, routingKey: "orders")
///     }
/// }
/// ```
///
/// The trade-off: code running here delays the connection's I/O (reading deliveries and
/// confirms, heartbeats, recovery) and every other task that prefers this executor. Run
/// short, non-blocking work on it — sending, awaiting answers, handing messages on — never a
/// blocking call or a long computation. A synchronous wait for something only this
/// connection delivers (a semaphore a consumer signals, a blocking call that waits for a
/// reply) never ends: the thread that would deliver it is the one waiting. Long work split
/// with `Task.yield()` lets the connection read between the pieces, every other piece. With
/// more than one connection, each task prefers the connection it talks to. An actor's code runs on the
/// actor's executor whatever the preference (the main actor's on the main thread). While the
/// connection reconnects, its thread is busy connecting and such tasks wait for it. After the
/// connection has closed, they go on on the global executor.
public final class RabbitMQConnectionExecutor: TaskExecutor {
    let core: ConnectionCore

    init(core: ConnectionCore) { self.core = core }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if !core.enqueueJob(job) { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }
}
