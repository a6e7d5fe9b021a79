import ArgumentParser
import Dispatch
import Glibc
import Synchronization

/// The entry point: a synchronous `main` that runs the async command in a task and waits.
///
/// Not an async `@main`: that parks the main thread in `dispatch_main()`, where valgrind 3.19
/// (Debian 12) crashes, and the profile of the hot paths is taken with callgrind. The main
/// thread is not part of Swift's cooperative pool, so waiting on it blocks nothing there.
/// Only a run with the main actor as a caller (`--caller main`, part of the default) needs
/// the main thread to serve the main actor: that run parks it in `dispatch_main()` and exits
/// from the task when done (profile.sh passes `--caller task` or `actor` to valgrind).
@main
enum BenchMain {
    static func main() {
        do {
            let command = try Bench.parseAsRoot()
            switch command {
            case let run as Bench.Run where run.callers.contains(.main):
                serveMainActor { try await run.run() }
            case let run as Bench.Run:
                try wait { try await run.run() }
            case let server as Bench.RPCServer:
                try wait { try await server.run() }
            case let fill as Bench.Fill:
                try wait { try await fill.run() }
            case let soak as Bench.Soak:
                try wait { try await soak.run() }
            case let idle as Bench.Idle:
                try wait { try await idle.run() }
            default:
                var command = command
                try command.run()
            }
        } catch {
            Bench.exit(withError: error)
        }
    }

    /// Runs `body` in a task while the main thread serves the main actor; exits the process
    /// when `body` is done (`dispatch_main()` never returns).
    private static func serveMainActor(_ body: @escaping @Sendable () async throws -> Void) -> Never {
        Task.detached {
            do {
                try await body()
                Glibc.exit(0)
            } catch {
                Bench.exit(withError: error)
            }
        }
        dispatchMain()
    }

    private static func wait(_ body: @escaping @Sendable () async throws -> Void) throws {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<Void, any Error>?>(nil)
        Task.detached {
            let result: Result<Void, any Error>
            do {
                try await body()
                result = .success(())
            } catch {
                result = .failure(error)
            }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        try outcome.withLock { $0 }?.get()
    }
}
