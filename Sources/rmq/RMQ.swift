import ArgumentParser
import Foundation
import Logging
import RabbitMQ
import RabbitMQPatterns

/// `rmq`: RabbitMQ from the shell, and the samples of the patterns module.
@main
struct RMQ: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rmq",
        abstract: "RabbitMQ from the shell: publish, consume, RPC, and a demo of the messaging patterns.",
        discussion: """
            The broker comes from --uri (repeatable: cluster nodes, tried in order), else the \
            environment variable RABBITMQ_URL (URIs separated by commas; a comma inside a password \
            stays, %2C always works), else \(ConnectionOptions.defaultURI)
            """,
        subcommands: [PublishCommand.self, ConsumeCommand.self, RPCCommand.self, DemoCommand.self])

    /// Parses the command line and runs the command. Usage errors are reported by the argument
    /// parser (with usage); failures at run time as one line `rmq: ...` on standard error and
    /// exit status 1, never a stack trace.
    static func main() async {
        // A reader that goes away (`rmq consume | head -1`) must give a write error, not kill us.
        signal(SIGPIPE, SIG_IGN)
        // The library logs routine events at info; on a terminal tool they would drown the
        // output, so only errors are shown unless RMQ_LOG_LEVEL asks for more.
        let level = ProcessInfo.processInfo.environment["RMQ_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error where error is CLIError || error is RabbitMQError || error is RabbitMQPatternsError {
            StandardStreams.writeError("rmq: \(CLIError.message(for: error))")
            Foundation.exit((error as? CLIError)?.exitStatus ?? 1)
        } catch {
            // The argument parser's own errors (help requested, validation) and exit codes.
            exit(withError: error)
        }
    }
}
