import ArgumentParser
import RabbitMQ
import RabbitMQPatterns

/// `rmq rpc call`: one request, its reply on standard output.
struct RPCCallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Send BODY to an RPC server and print the reply.",
        discussion: """
            Uses direct reply-to. Exits 1 with a message on standard error when no reply comes \
            within the timeout, when no queue is bound for the request, or when the server \
            answers with an error reply ({"error": ..., "success": false}).
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The server's queue (the routing key on the default exchange).")
    var queue: String

    @Option(help: "Seconds to wait for the reply.")
    var timeout: Double = 30

    @Argument(help: "The request body.")
    var body: String

    func validate() throws {
        _ = try Seconds.duration(timeout, option: "--timeout")
    }

    func run() async throws {
        let timeout = try Seconds.duration(timeout, option: "--timeout")
        let connection = try await connection.connect(name: "rmq rpc call")
        do {
            let reply = try await RabbitMQRPCClient.withClient(connection: connection) { client in
                try await client.call(
                    Array(body.utf8), routingKey: queue, timeout: timeout)
            }
            var output = reply.body
            if output.last != UInt8(ascii: "\n") { output.append(UInt8(ascii: "\n")) }
            try StandardStreams.write(output)
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
    }
}
