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
            With --confirm (implied by --mandatory) the exit status is 0 only if the broker \
            confirmed every message; returned or nacked messages are counted on standard error \
            and give exit status 1.
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

    func run() async throws {
        let template = try messageTemplate()
        // Check the one body before connecting, so bad input costs no connection.
        let first = try body.map { try template.message(from: Array($0.utf8), line: nil) }
        let connection = try await connection.connect(name: "rmq publish")
        let tally: PublishTally
        do {
            tally = try await publish(first: first, template: template, on: connection)
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        if let summary = tally.failureSummary { throw CLIError(summary) }
    }

    private func publish(
        first: OutgoingMessage?, template: MessageTemplate, on connection: RabbitMQConnection
    ) async throws -> PublishTally {
        let channel = try await connection.openChannel()
        if !exchange.isEmpty {
            // Without this a publish to a missing exchange "succeeds" and the broker's 404
            // arrives after we have exited.
            try await channel.exchangeDeclare(exchange, passive: true)
        }
        let confirming = confirm || mandatory
        if confirming { try await channel.confirmSelect() }
        var tally = PublishTally()
        var pending: [RabbitMQConfirmation] = []

        func send(_ message: OutgoingMessage) async throws {
            if confirming {
                pending.append(
                    try await channel.publishWithConfirm(
                        message.body, exchange: exchange, routingKey: routingKey, properties: message.properties,
                        mandatory: mandatory))
                // Settle the oldest confirmations as we go, so memory stays bounded.
                if pending.count >= 1024 {
                    for confirmation in pending.prefix(512) { tally.record(try await confirmation.outcome()) }
                    pending.removeFirst(512)
                }
            } else {
                try await channel.publish(
                    message.body, exchange: exchange, routingKey: routingKey, properties: message.properties)
                tally.published += 1
            }
        }

        if let first {
            try await send(first)
        } else {
            var number = 0
            for try await batch in StandardInputLines() {
                for line in batch {
                    number += 1
                    try await send(try template.message(from: line, line: number))
                }
            }
        }
        for confirmation in pending { tally.record(try await confirmation.outcome()) }
        if let reason = channel.closeReason { throw reason }
        return tally
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
