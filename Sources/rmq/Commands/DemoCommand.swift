import ArgumentParser
import RabbitMQ
import RabbitMQPatterns

/// `rmq demo`: the README's main job.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run every pattern end to end against the broker and report what flowed where.",
        discussion: """
            Direct, topic and fanout exchanges with JSON envelopes, RPC over direct reply-to \
            (with a timed burst of concurrent calls), and retries ending in the dead-letter \
            queue. Every name starts with rmq-demo-<random>, and everything is deleted at the end.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .customLong("rpc-calls"), help: "How many RPC calls to time.")
    var rpcCalls = 2000

    @Option(name: .customLong("rpc-concurrency"), help: "How many of them in flight at once.")
    var rpcConcurrency = 64

    func run() async throws {
        guard rpcCalls > 0, rpcConcurrency > 0 else { throw CLIError("--rpc-calls and --rpc-concurrency must be positive") }
        let connection = try await connection.connect(name: "rmq demo")
        let demo = Demo(connection: connection)
        let version = connection.serverProperties["version"]?.stringValue ?? "?"
        print("rmq demo: \(connection.endpoint?.description ?? "?") (RabbitMQ \(version)), names \(demo.prefix).*")
        do {
            try await demo.direct()
            try await demo.topic()
            try await demo.fanout()
            try await demo.rpc(calls: rpcCalls, concurrency: rpcConcurrency)
            try await demo.retry()
        } catch {
            _ = await demo.cleanUp()
            try? await connection.close()
            throw error
        }
        let deleted = await demo.cleanUp()
        try await connection.close()
        print("done: every pattern worked; deleted the \(deleted) queues and exchanges the demo declared")
    }
}
