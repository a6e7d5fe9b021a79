import Foundation
import RabbitMQ
import RabbitMQPatterns

extension Demo {
    /// A payment that succeeds on its second attempt, one that always fails and is parked
    /// after the last delay, and a poison message parked at once.
    func retry() async throws {
        let delays: [Duration] = [.milliseconds(200), .milliseconds(400), .milliseconds(800)]
        let payments = try await RabbitMQRetryQueue.declare(
            name("payments"), on: connection, configuration: .init(delays: delays))
        topology.record(
            queues: [payments.workQueue, payments.deadLetterQueue] + payments.delayQueues, exchanges: [payments.workExchange])
        let attempts = AttemptLog()
        // Consume the dead-letter queue before anything can land in it.
        let parkingChannel = try await connection.openChannel()
        let parked = try await parkingChannel.consume(queue: payments.deadLetterQueue)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await payments.run(DemoOrder.self) { attempt in
                    attempts.record(attempt.data.id, attempt: attempt.attempt)
                    switch attempt.data.id {
                    case "p-1" where attempt.attempt < 2: throw CLIError("gateway timeout")
                    case "p-2": throw CLIError("card declined")
                    default: return
                    }
                }
            }
            defer { group.cancelAll() }
            try await payments.publish(Self.order("p-1", "eu", 1999))
            try await payments.publish(Self.order("p-2", "eu", 4999))
            // Not an envelope at all.
            try await payments.channel.publishAndWaitForConfirm(
                Array(#"{"id": "p-3"}"#.utf8), exchange: payments.workExchange, routingKey: payments.name)

            let deadLetters = try await within("2 messages on \(payments.deadLetterQueue)") {
                var found: [RabbitMQDelivery] = []
                for try await delivery in parked {
                    try delivery.ack()
                    found.append(delivery)
                    if found.count == 2 { break }
                }
                return found
            }
            try await within("p-1 to succeed") {
                while (attempts.snapshot["p-1"]?.count ?? 0) < 2 { try await Task.sleep(for: .milliseconds(20)) }
            }
            let seen = attempts.snapshot
            var lines = [
                "work queue \(payments.workQueue), delays \(delays.map(Self.describe).joined(separator: ", ")), "
                    + "dead-letter queue \(payments.deadLetterQueue)",
                "p-1 failed once, succeeded on attempt \(seen["p-1"]?.last ?? 0)",
            ]
            for delivery in deadLetters {
                let headers = delivery.properties.headers ?? [:]
                let reason = headers[RabbitMQRetryQueue.deadLetterReasonHeader]?.stringValue ?? "?"
                let count = headers[RabbitMQRetryQueue.retryCountHeader]?.int64Value ?? -1
                let error = headers[RabbitMQRetryQueue.lastErrorHeader]?.stringValue ?? "?"
                let id = (try? delivery.envelope(DemoOrder.self).data.id) ?? "the poison message"
                let tried = seen[id].map { "after attempts \($0.map(String.init).joined(separator: ", "))" } ?? "at once"
                lines.append("\(id) parked \(tried): \(reason), x-retry-count \(count), x-last-error \"\(error)\"")
            }
            report("retry", lines)
        }
        try await parkingChannel.close()
        try await payments.close()
    }

    static func describe(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }
}
