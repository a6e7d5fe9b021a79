import Foundation
import RabbitMQ
import RabbitMQPatterns

/// `rmq demo`: each pattern end to end against the broker, with unique names, reporting what
/// flowed where, and deleting everything it declared.
struct Demo: Sendable {
    let connection: RabbitMQConnection
    /// Every name the demo declares starts with it, so runs never collide.
    let prefix: String
    /// How long any single expected message may take before the demo fails.
    let patience: Duration = .seconds(15)
    /// What to delete at the end.
    let topology = DemoTopology()

    init(connection: RabbitMQConnection) {
        self.connection = connection
        prefix = "rmq-demo-" + UUID().uuidString.prefix(8).lowercased()
    }

    func name(_ suffix: String) -> String { "\(prefix).\(suffix)" }

    func report(_ pattern: String, _ lines: [String]) {
        print(pattern.padding(toLength: 8, withPad: " ", startingAt: 0) + lines[0])
        for line in lines.dropFirst() { print(String(repeating: " ", count: 8) + line) }
    }

    /// The next `count` messages of `subscription`, acknowledged, or a clear error when they
    /// do not all arrive within ``patience``.
    func take<Payload>(_ count: Int, from subscription: RabbitMQSubscription<Payload>) async throws
        -> [RabbitMQEnvelopeMessage<Payload>]
    {
        try await within("\(count) message(s) on \(subscription.queue)") {
            var messages: [RabbitMQEnvelopeMessage<Payload>] = []
            for try await message in subscription {
                try message.ack()
                messages.append(message)
                if messages.count == count { break }
            }
            return messages
        }
    }

    /// Runs `body`, failing with a one-line error naming `what` after ``patience``.
    func within<Result: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> Result) async throws
        -> Result
    {
        let patience = self.patience
        return try await withThrowingTaskGroup(of: Result.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: patience)
                throw CLIError("demo: timed out waiting for \(what)")
            }
            defer { group.cancelAll() }
            guard let result = try await group.next() else { throw CancellationError() }
            return result
        }
    }

    /// Deletes everything the demo declared, after success or failure alike. A channel closed
    /// by a failed deletion is replaced, and the rest still deleted.
    func cleanUp() async -> Int {
        var deleted = 0
        var channel: RabbitMQChannel? = nil
        for (name, isQueue) in topology.queues.map({ ($0, true) }) + topology.exchanges.map({ ($0, false) }) {
            if channel?.isOpen != true { channel = try? await connection.openChannel() }
            guard let channel else { break }
            do {
                if isQueue { try await channel.queueDelete(name) } else { try await channel.exchangeDelete(name) }
                deleted += 1
            } catch {
                continue
            }
        }
        try? await channel?.close()
        return deleted
    }

    static func order(_ id: String, _ region: String, _ cents: Int) -> RabbitMQEnvelope<DemoOrder> {
        RabbitMQEnvelope(
            type: "shop.order.placed", data: DemoOrder(id: id, region: region, cents: cents),
            metadata: RabbitMQEnvelopeMetadata(source: "rmq-demo", correlationID: "demo-\(id)"))
    }
}
