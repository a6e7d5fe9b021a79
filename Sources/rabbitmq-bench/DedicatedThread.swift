import Glibc

/// Runs blocking work (the C baseline, which calls rabbitmq-c synchronously) on an OS thread
/// of its own and resumes the awaiting task when it is done, so Swift's cooperative pool
/// never blocks.
enum DedicatedThread {
    static func run<Result: Sendable>(_ body: @escaping @Sendable () -> Result) async -> Result {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result, Never>) in
            let job = Job { continuation.resume(returning: body()) }
            let argument = Unmanaged.passRetained(job).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, dedicatedThreadMain, argument)
            guard status == 0 else {
                Unmanaged<Job>.fromOpaque(argument).release()
                // Without a thread there is no way to run C code safely; this is a broken machine.
                fatalError("pthread_create failed: \(status)")
            }
            pthread_detach(thread)
        }
    }

    fileprivate final class Job: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
}

// A file-scope function, not a closure literal: Swift 6 closures written in an isolated
// context carry an isolation check that fails on a foreign thread.
private func dedicatedThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let job = Unmanaged<DedicatedThread.Job>.fromOpaque(argument!).takeRetainedValue()
    job.body()
    return nil
}
