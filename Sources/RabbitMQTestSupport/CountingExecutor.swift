import Dispatch
import Synchronization

/// A serial executor that counts the jobs enqueued on it: an actor running on it sees every
/// hop back onto it (an `await` that left the actor, then returned) as one more job. Tests
/// use it to find out whether a call stayed on its caller's executor.
public final class CountingExecutor: SerialExecutor {
    private let queue = DispatchQueue(label: "rabbitmq-tests.counting-executor")
    private let count = Atomic<Int>(0)

    public init() {}

    /// Jobs enqueued so far.
    public var enqueued: Int { count.load(ordering: .relaxed) }

    public func enqueue(_ job: consuming ExecutorJob) {
        count.add(1, ordering: .relaxed)
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    public func checkIsolated() {
        dispatchPrecondition(condition: .onQueue(queue))
    }
}

/// An actor of an application's own, running on a ``CountingExecutor``: `run` executes a
/// body isolated to it and says how many times the body came back onto the actor.
public actor CountingActor {
    private let executor = CountingExecutor()

    public init() {}

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// Runs `body` on this actor; returns its result and the hops back onto the actor it took
    /// (jobs enqueued on the executor while it ran).
    public func run<Result: Sendable>(
        _ body: nonisolated(nonsending) () async throws -> Result
    ) async rethrows -> (result: Result, hops: Int) {
        let before = executor.enqueued
        let result = try await body()
        return (result, executor.enqueued - before)
    }
}
