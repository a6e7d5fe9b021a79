import ArgumentParser
import RabbitMQ
import RabbitMQPatterns

/// `rmq rpc serve`: answers requests from a queue, by echo or through a shell command.
struct RPCServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Answer RPC requests from a queue (declared durable if missing).",
        discussion: """
            Echoes each request body by default. With --exec, runs COMMAND through /bin/sh with \
            the request body on standard input and replies with its standard output; a \
            non-zero exit becomes an error reply carrying its standard error. SIGINT/SIGTERM \
            stop the running command (SIGTERM) and the server, and exit 130/143.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The request queue.")
    var queue: String

    @Option(help: "Stop after answering this many requests.")
    var count: Int?

    @Option(help: ArgumentHelp("A shell command that computes each reply.", valueName: "command"))
    var exec: String?

    func run() async throws {
        if let count, count < 1 { throw CLIError("--count must be at least 1") }
        let connection = try await connection.connect(name: "rmq rpc serve")
        let exec = self.exec
        let stop = StopSignals()
        // Serve an existing queue as it is (durable or not); declare only a missing one.
        let exists: Bool
        do {
            let probe = try await connection.openChannel()
            try await probe.queueDeclare(queue, passive: true)
            try await probe.close()
            exists = true
        } catch let error as RabbitMQError where error.code == .notFound {
            exists = false
        }
        let server = RabbitMQRPCServer(
            connection: connection, queue: queue,
            configuration: .init(declareQueue: !exists, concurrency: 1, requestLimit: count)
        ) { request in
            guard let exec else { return request.body }
            let result = try await ShellCommand.run(exec, input: request.body)
            // Stopped by a signal (the command with it, or never started): the request is
            // left unacknowledged, for another server, rather than answered with an error.
            if stop.received != nil { throw CancellationError() }
            guard result.status == 0 else {
                let detail = String(decoding: result.errorOutput, as: UTF8.self)
                    .split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
                // The command's own words go back to the caller: they are what it chose to say.
                throw RabbitMQPatternsError.permanentFailure(
                    "command exited with status \(result.status)" + (detail.isEmpty ? "" : ": \(detail)"))
            }
            return result.output
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run() }
                group.addTask {
                    // A signal stops the commands running now, then the server.
                    guard await stop.wait() != nil else { return }
                    ShellCommand.terminateAll()
                }
                // Either the server is done (--count), or a signal came: stop the other.
                try await group.next()
                group.cancelAll()
                try await group.waitForAll()
            }
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        if let signal = stop.received {
            throw CLIError("stopped by \(StopSignals.name(of: signal))", exitStatus: StopSignals.exitStatus(for: signal))
        }
    }
}
