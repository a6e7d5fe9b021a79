import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// `rmq publish` and `rmq rpc` at the edges (issue 13): partial failures, signals and odd
/// input. Each test says what it failed on before the fix.
@Suite("rmq publish and rpc: edges", .timeLimit(.minutes(3)))
struct RMQPublishEdgeTests {
    /// Before: without --confirm, a publish the broker refused (here: to an internal
    /// exchange, which closes the channel) exited 0; the refusal came after we had exited.
    @Test func publishWithoutConfirmReportsARefusedPublish() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let exchange = TestBroker.uniqueName("cli-internal")
        try await channel.exchangeDeclare(exchange, durable: true, internal: true)
        let result = try await RMQTool.run(["publish", "--exchange", exchange, "--routing-key", "k", "refused"])
        RMQToolTests.expectOneLineError(result, containing: "403 ACCESS_REFUSED")
        #expect(result.errorOutput.contains("stopped: 1 published"), "\(result)")
        try await channel.exchangeDelete(exchange)
        try await connection.close()
    }

    /// A line that stops `rmq publish` part way: the options, the input, and the error.
    struct StoppingLine: Sendable, CustomStringConvertible {
        var options: [String]
        var input: String
        var error: String
        var description: String { error }
    }

    /// Before, for a bad line: the run stopped with only its error; what had been published
    /// (and confirmed) was not said. Before, for a line longer than --max-line (default
    /// 128 MiB): no limit (a file without newlines was read whole into memory). Now each
    /// stops the run with one line naming it and saying how far it got.
    @Test(arguments: [
        StoppingLine(
            options: ["--envelope", "t"], input: "{\"n\": 1}\n{\"n\": 2}\nnope\n{\"n\": 4}\n",
            error: "line 3 is not valid JSON"),
        StoppingLine(
            options: ["--max-line", "10"], input: "short\n0123456789\r\n0123456789X\nnever\n",
            error: "line 3 of standard input is longer than 10 bytes"),
    ])
    func publishStopsAtALineAndSaysHowFarItGot(_ line: StoppingLine) async throws {
        let (connection, channel, queue) = try await RMQToolTests.declareQueue("cli-stopping-line")
        let result = try await RMQTool.run(
            ["publish", "--exchange", "", "--routing-key", queue, "--confirm"] + line.options, input: line.input)
        RMQToolTests.expectOneLineError(result, containing: line.error)
        #expect(result.errorOutput.contains("stopped: 2 published, 2 confirmed"), "\(result)")
        #expect(try await channel.queueDeclare(queue, passive: true).messageCount == 2)
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: with --envelope a blank line was "not valid JSON" (an error), without it an
    /// empty message. Now it is skipped either way, a CRLF ends a line like an LF, and each
    /// line's envelope has an id of its own.
    @Test func publishSkipsBlankLinesWithAnEnvelopeToo() async throws {
        let (connection, channel, queue) = try await RMQToolTests.declareQueue("cli-blank")
        let result = try await RMQTool.run(
            ["publish", "--exchange", "", "--routing-key", queue, "--envelope", "t", "--confirm"],
            input: "{\"n\": 1}\r\n\r\n\n{\"n\": 2}\n")
        #expect(result.status == 0, "\(result)")
        var ids: Set<String> = []
        while let delivery = try await channel.get(queue: queue, autoAck: true) {
            ids.insert(delivery.properties.messageID ?? "")
        }
        #expect(ids.count == 2 && !ids.contains(""), "two messages, two envelope ids: \(ids)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: a signal killed `rmq publish` where it stood. Now it stops reading, waits for
    /// the outstanding confirms, says what it did and exits 128 + the signal.
    @Test(arguments: [SIGINT, SIGTERM])
    func publishStopsCleanlyOnASignal(signal: Int32) async throws {
        let (connection, channel, queue) = try await RMQToolTests.declareQueue("cli-publish-signal")
        let rmq = try RunningRMQ(["publish", "--exchange", "", "--routing-key", queue, "--confirm"], withInput: true)
        try await rmq.write((1...50).map { "m-\($0)\n" }.joined())
        try await eventually(timeout: .seconds(60), "50 messages in \(queue)") {
            try await channel.queueDeclare(queue, passive: true).messageCount == 50
        }
        rmq.send(signal)
        let status = await rmq.status()
        #expect(status == 128 + signal && !rmq.killedBySignal, "\(rmq.errorOutput)")
        #expect(rmq.errorOutput.contains("stopped by SIG"), "\(rmq.errorOutput)")
        #expect(rmq.errorOutput.contains("50 published, 50 confirmed"), "\(rmq.errorOutput)")
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    // MARK: - input at the edges

    /// Before: a duration too large for milliseconds trapped (an overflow, "Fatal error").
    @Test func hugeDurationsAreUsageErrors() async throws {
        let call = try await RMQTool.run(["rpc", "call", "--queue", "q", "--timeout", "1e300", "x"])
        #expect(call.status == 64, "\(call)")
        #expect(call.errorOutput.contains("--timeout must be a positive number of seconds"), "\(call)")
        let consume = try await RMQTool.run(["consume", "--queue", "q", "--idle-timeout", "1e300"])
        #expect(consume.status == 64, "\(consume)")
        #expect(consume.errorOutput.contains("--idle-timeout must be a positive number of seconds"), "\(consume)")
    }

    /// A read error is an error, not the end of the input (standard input a directory: EISDIR).
    @Test func aReadErrorIsNotTheEndOfInput() async throws {
        let result = try await RMQTool.runShell(#""$RMQ" publish --exchange "" --routing-key nowhere < /"#)
        RMQToolTests.expectOneLineError(result, containing: "cannot read standard input: Is a directory")
    }

    /// Before: the request and reply files of --exec were created with the umask's mode
    /// (0644 here): any local user could read the bodies.
    @Test func rpcServeExecFilesAreOwnerOnly() async throws {
        let (connection, channel, queue) = try await RMQToolTests.declareQueue("cli-rpc-mode")
        async let server = RMQTool.run(["rpc", "serve", "--queue", queue, "--count", "1", "--exec", "stat -L -c %a /dev/stdin /dev/stdout /dev/stderr"])
        let reply = try await RMQTool.run(["rpc", "call", "--queue", queue, "--timeout", "60", "body"])
        #expect(reply.output == "600\n600\n600\n", "\(reply)")
        #expect(try await server.status == 0)
        try await channel.queueDelete(queue)
        try await connection.close()
    }

    /// Before: SIGTERM killed `rmq rpc serve` and left its --exec command running. Now the
    /// command is stopped too, and rmq exits 143.
    @Test func rpcServeStopsItsCommandOnSIGTERM() async throws {
        let (connection, channel, queue) = try await RMQToolTests.declareQueue("cli-rpc-stop")
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("rmq-child-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: pidFile) }
        let server = try RunningRMQ(["rpc", "serve", "--queue", queue, "--exec", "echo $$ > \(pidFile.path); exec sleep 600"])
        let caller = Task { try await RMQTool.run(["rpc", "call", "--queue", queue, "--timeout", "120", "x"]) }
        defer { caller.cancel() }
        var child: pid_t = 0
        try await eventually(timeout: .seconds(60), "the command to start") {
            let text = (try? String(contentsOf: pidFile, encoding: .utf8)) ?? ""
            child = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            return child > 0
        }
        server.send(SIGTERM)
        let status = await server.status()
        #expect(status == 143 && !server.killedBySignal, "\(server.errorOutput)")
        // Gone, or a zombie about to be reaped by its new parent.
        try await eventually(timeout: .seconds(60), "the command \(child) to end") {
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8) else { return true }
            return stat.contains(") Z ")
        }
        // A test that failed leaves no sleeper behind (checked by name: the id may be reused).
        if (try? String(contentsOfFile: "/proc/\(child)/comm", encoding: .utf8)) == "sleep\n" { kill(child, SIGKILL) }
        // The stopped request was not answered with an error and acknowledged: it is back in
        // the queue for another server (review of issue 13: it could get 'command exited
        // with status 143').
        try await eventually(timeout: .seconds(60), "the request to return to the queue") {
            try await channel.queueDeclare(queue, passive: true).messageCount == 1
        }
        try await channel.queueDelete(queue)
        try await connection.close()
    }
}
