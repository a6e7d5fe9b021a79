import RabbitMQ

/// Lets at most two runs of the broker's tool script (`rabbitmqctl` and friends) go at once.
///
/// Each `rabbitmqctl` is an Erlang VM that boots, connects to the node, and stops: a second or
/// two of CPU. Swift Testing runs a suite's tests in parallel, and dozens of them starting
/// their VMs at once on CI's loaded 2-core machine made every one miss the script's own
/// timeout (`exited 124` in a run of the RabbitMQ 4.0 suite, 13 tests). Two at a time keeps
/// both cores busy; the wait in line is not part of a tool's timeout.
final class BrokerToolGate: Sendable {
    static let shared = BrokerToolGate(limit: 2)

    private struct State {
        var running = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let limit: Int
    private let state = LockedValue(State())

    init(limit: Int) { self.limit = limit }

    /// Runs `body` once fewer than `limit` others run.
    func run<T>(_ body: () async throws -> T) async throws -> T {
        await enter()
        defer { leave() }
        return try await body()
    }

    private func enter() async {
        // Not cancellable: a turn comes when a running tool ends, and each is bounded by the
        // script's own timeout.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state -> Bool in
                if state.running < limit {
                    state.running += 1
                    return true
                }
                state.waiting.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    private func leave() {
        // The turn passes straight to the next in line (running stays the same), else frees.
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiting.isEmpty {
                state.running -= 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
