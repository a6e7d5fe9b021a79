import ArgumentParser
import Foundation
import RabbitMQ
import RabbitMQPatterns

/// `rmq publish`: one message, or one per line of standard input.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish BODY, or one message per line of standard input when BODY is absent.",
        discussion: """
            Blank lines are skipped; a line's trailing CR is removed. With --confirm (implied \
            by --mandatory) the exit status is 0 only if the broker confirmed every message; \
            returned or nacked messages are counted on standard error and give exit status 1. \
            Without it, a publish the broker refused (it closes the channel) is an error too. \
            A bad line, a refused publish or a lost connection stops the run with how many \
            messages were published (and confirmed). SIGINT/SIGTERM stop reading, wait a few \
            seconds for outstanding confirms, print that summary and exit 130/143.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The exchange; \"\" is the default exchange (routing key = queue name).")
    var exchange: String

    @Option(name: .customLong("routing-key"), help: "The routing key.")
    var routingKey: String = ""

    @Flag(help: "Persistent delivery mode (the default with --envelope).")
    var persistent = false

    @Flag(help: "Wait for the broker to confirm every message.")
    var confirm = false

    @Flag(help: "Return messages no queue is bound for (implies --confirm).")
    var mandatory = false

    @Option(
        help: ArgumentHelp(
            "Headers as a JSON object: integers stay integers, other numbers become doubles, objects tables.",
            valueName: "json"))
    var headers: String?

    @Option(name: .customLong("content-type"), help: "The content type.")
    var contentType: String?

    @Option(name: .customLong("correlation-id"), help: "The correlation id.")
    var correlationID: String?

    @Option(name: .customLong("reply-to"), help: "The reply-to queue.")
    var replyTo: String?

    @Option(name: .customLong("message-id"), help: "The message id (a UUID with --envelope: it becomes the envelope id).")
    var messageID: String?

    @Option(help: "The message type.")
    var type: String?

    @Option(name: .customLong("app-id"), help: "The publishing application.")
    var appID: String?

    @Option(help: ArgumentHelp("Per-message TTL in milliseconds.", valueName: "ms"))
    var expiration: String?

    @Option(help: ArgumentHelp("Wrap each JSON body as the data of an envelope of this type.", valueName: "type"))
    var envelope: String?

    @Argument(help: "The message body; absent: one message per line of standard input.")
    var body: String?

    @Option(
        name: .customLong("max-line"),
        help: ArgumentHelp("The longest line of standard input, in bytes (the broker's default largest message).", valueName: "bytes"))
    var maxLine: Int = StandardInputLines.defaultMaxLine

    func validate() throws {
        guard maxLine > 0 else { throw ValidationError("--max-line must be a positive number of bytes") }
    }

    /// How long a signal's stop waits for the confirms of what was published.
    static let confirmWaitOnStop: Duration = .seconds(5)

    func run() async throws {
        let template = try messageTemplate()
        // Check the one body before connecting, so bad input costs no connection.
        let first = try body.map { try template.message(from: Array($0.utf8), line: nil) }
        let stop = StopSignals()
        let connection = try await connection.connect(name: "rmq publish")
        var tally = PublishTally(confirming: confirm || mandatory)
        do {
            try await publish(first: first, template: template, on: connection, stop: stop, tally: &tally)
        } catch {
            try? await connection.close()
            // A run that stopped half way says how far it got.
            throw CLIError("\(CLIError.message(for: error)); stopped: \(tally.summary)")
        }
        try await connection.close()
        if let signal = stop.received {
            throw CLIError(
                "stopped by \(StopSignals.name(of: signal)): \(tally.summary)", exitStatus: StopSignals.exitStatus(for: signal))
        }
        if let summary = tally.failureSummary { throw CLIError(summary) }
    }

    /// Publishes `first`, or each non-blank line of standard input until its end or a
    /// signal, counting in `tally` as it goes (so a failure can say how far it got). Then
    /// waits for the outstanding confirms (after a signal, for ``confirmWaitOnStop`` at most),
    /// and, without confirms, for one round trip on the channel: the broker handles a
    /// channel's methods in order, so a publish it refused (a message too large, an internal
    /// exchange) has closed the channel by then, and that is an error, not a silent exit 0.
    private func publish(
        first: OutgoingMessage?, template: MessageTemplate, on connection: RabbitMQConnection, stop: StopSignals,
        tally: inout PublishTally
    ) async throws {
        let channel = try await connection.openChannel()
        if !exchange.isEmpty {
            // Without this a publish to a missing exchange "succeeds" and the broker's 404
            // arrives after we have exited.
            try await channel.exchangeDeclare(exchange, passive: true)
        }
        let confirming = tally.confirming
        if confirming { try await channel.confirmSelect() }
        var pending: [RabbitMQConfirmation] = []

        func send(_ message: OutgoingMessage) async throws {
            if confirming {
                pending.append(
                    try await channel.publishWithConfirm(
                        message.body, exchange: exchange, routingKey: routingKey, properties: message.properties,
                        mandatory: mandatory))
                tally.published += 1
                // Settle the oldest confirmations as we go, so memory stays bounded.
                if pending.count >= 1024 {
                    // Each recorded one leaves `pending` (also when a later one throws), so
                    // that the failure path does not count it again.
                    var settled = 0
                    defer { pending.removeFirst(settled) }
                    for confirmation in pending.prefix(512) {
                        tally.record(try await confirmation.outcome())
                        settled += 1
                    }
                }
            } else {
                try await channel.publish(
                    message.body, exchange: exchange, routingKey: routingKey, properties: message.properties)
                tally.published += 1
            }
        }

        do {
            if let first {
                // A signal while connecting: nothing is published.
                if stop.received == nil { try await send(first) }
            } else {
                var number = 0
                lines: for try await batch in StandardInputLines(maxLine: maxLine, stoppingOn: stop) {
                    for line in batch {
                        // After a signal, the lines read ahead are not published.
                        if stop.received != nil { break lines }
                        number += 1
                        if line.isEmpty {
                            tally.blankLines += 1
                            continue
                        }
                        try await send(try template.message(from: line, line: number))
                    }
                }
            }
        } catch {
            // A bad line: what was published before it is confirmed (or not) all the same.
            for confirmation in pending { tally.record(await Self.outcome(of: confirmation)) }
            throw error
        }
        if stop.received != nil {
            for result in await Self.settle(pending, within: Self.confirmWaitOnStop) { tally.record(result) }
        } else {
            for confirmation in pending { tally.record(try await confirmation.outcome()) }
            if !confirming { try await channel.qos(prefetchCount: 0) }
        }
        if let reason = channel.closeReason { throw reason }
    }

    private static func outcome(of confirmation: RabbitMQConfirmation) async -> Result<RabbitMQPublishOutcome, any Error> {
        do {
            return .success(try await confirmation.outcome())
        } catch {
            return .failure(error)
        }
    }

    /// The outcomes of `pending`, each a failure once `limit` has passed without it.
    private static func settle(
        _ pending: [RabbitMQConfirmation], within limit: Duration
    ) async -> [Result<RabbitMQPublishOutcome, any Error>] {
        await withTaskGroup(of: [Result<RabbitMQPublishOutcome, any Error>]?.self) { group in
            group.addTask {
                var results: [Result<RabbitMQPublishOutcome, any Error>] = []
                // Cancelled at the limit: each outcome not in yet fails at once.
                for confirmation in pending { results.append(await outcome(of: confirmation)) }
                return results
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            var settled: [Result<RabbitMQPublishOutcome, any Error>] = []
            while let next = await group.next() {
                group.cancelAll()
                if let next { settled = next }
            }
            return settled
        }
    }

    private func messageTemplate() throws -> MessageTemplate {
        var properties = RabbitMQProperties()
        if let headers {
            let parsed: JSONValue
            do {
                parsed = try JSONParser.parse(headers)
            } catch {
                throw CLIError("--headers is not valid JSON: \(error)")
            }
            guard case .object = parsed, case .table(let table) = parsed.fieldValue else {
                throw CLIError("--headers must be a JSON object")
            }
            properties.headers = table
        }
        if let expiration {
            guard !expiration.isEmpty, expiration.allSatisfy(\.isASCII), UInt32(expiration) != nil else {
                throw CLIError("--expiration must be a whole number of milliseconds")
            }
            properties.expiration = expiration
        }
        if persistent { properties.deliveryMode = .persistent }
        properties.contentType = contentType
        properties.correlationID = correlationID
        properties.replyTo = replyTo
        properties.messageID = messageID
        properties.type = type
        properties.appID = appID
        if let envelope {
            guard !envelope.isEmpty else { throw CLIError("--envelope needs an event type") }
            guard type == nil else {
                throw CLIError("--type cannot be combined with --envelope (the envelope type is the message type)")
            }
            if let messageID, UUID(uuidString: messageID) == nil {
                throw CLIError("--message-id must be a UUID with --envelope (it becomes the envelope id)")
            }
        }
        return MessageTemplate(properties: properties, envelopeType: envelope)
    }
}
