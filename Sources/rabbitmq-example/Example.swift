// The end-to-end program `scripts/run.sh` runs: connect to the broker in RABBITMQ_URL (or
// the local default), declare a queue, publish with confirms, consume with manual acks,
// and print what happened.
import Foundation
import RabbitMQ

@main
struct Example {
    static func main() async {
        let uri = ProcessInfo.processInfo.environment["RABBITMQ_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
        do {
            try await run(uri: uri)
        } catch {
            print("error: \(error)")
            exit(1)
        }
    }

    static func run(uri: String) async throws {
        let count = 1000
        let connection = try await RabbitMQConnection.connect(uri: uri)
        print("connected to \(connection.endpoint.map(\.description) ?? "?") "
            + "(heartbeat \(connection.negotiatedHeartbeat) s, frame max \(connection.negotiatedFrameMax) B)")

        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        print("declared queue \(queue.name)")

        try await channel.confirmSelect(maxOutstanding: 256)
        let started = ContinuousClock.now
        var confirmations: [RabbitMQConfirmation] = []
        for n in 0..<count {
            var properties = RabbitMQProperties(contentType: "text/plain", messageID: "m-\(n)")
            properties.headers = ["sequence": .int64(Int64(n))]
            confirmations.append(
                try await channel.publishWithConfirm(Array("message \(n)".utf8), routingKey: queue.name, properties: properties))
        }
        var acked = 0
        for confirmation in confirmations where try await confirmation.outcome() == .acked { acked += 1 }
        print("published \(count), confirmed \(acked) in \(ContinuousClock.now - started)")

        let consumerChannel = try await connection.openChannel()
        try await consumerChannel.qos(prefetchCount: 100)
        let consumer = try await consumerChannel.consume(queue: queue.name)
        var received = 0
        var inOrder = true
        for try await delivery in consumer {
            if delivery.properties.messageID != "m-\(received)" { inOrder = false }
            try delivery.ack()
            received += 1
            if received == count { break }
        }
        print("consumed \(received) with manual acks, in order: \(inOrder)")
        try await connection.close()
        print("closed cleanly")
    }
}
