/// Where the Swift side's scenario loop runs: users call the API from all three, and an
/// `await` that hops between executors costs per message, so each is measured.
enum Caller: String, Sendable, CaseIterable {
    /// A nonisolated task on the global concurrent executor (a service's detached worker).
    case task
    /// The main actor (top-level code, a command-line tool, an app's UI code).
    case main
    /// An actor of the application's own (a service's stateful component).
    case actor
    /// A nonisolated task that prefers its connection's executor (`withTaskExecutorPreference`,
    /// SE-0417): it runs on the connection's I/O thread, so a round trip stays on one thread.
    case connection

    init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.rawValue == name.lowercased() }) else { return nil }
        self = match
    }

    /// Runs `scenario` with the Swift implementation, its loop isolated to this caller.
    func run(_ scenario: Scenario, count: Int, runner: Runner) async throws -> RunResult {
        switch self {
        case .task: try await runner.runSwift(scenario, count: count, isolation: nil)
        case .connection: try await runner.runSwift(scenario, count: count, onConnectionExecutor: true, isolation: nil)
        case .main: try await Self.onMainActor(scenario, count: count, runner: runner)
        case .actor: try await BenchActor().run(scenario, count: count, runner: runner)
        }
    }

    @MainActor
    private static func onMainActor(_ scenario: Scenario, count: Int, runner: Runner) async throws -> RunResult {
        try await runner.runSwift(scenario, count: count, isolation: MainActor.shared)
    }
}

/// A user-defined actor, as a service would have one: the scenario loop runs on its executor
/// (a default actor, scheduled on the global concurrent executor's threads).
actor BenchActor {
    /// A little state, as a real actor has: the loop's results pass through it.
    private var runs = 0

    func run(_ scenario: Scenario, count: Int, runner: Runner) async throws -> RunResult {
        runs += 1
        return try await runner.runSwift(scenario, count: count, isolation: self)
    }
}
