import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// `rmq` against a broker that restarts. The name ends in BrokerWideTests so that
/// scripts/test.sh runs it alone, after the other tests: it stops the shared broker.
@Suite("rmq: broker restarts", .serialized, .timeLimit(.minutes(3)))
struct RMQBrokerWideTests {
    @Test func consumeKeepsGoingAcrossABrokerRestart() async throws {
        let queue = TestBroker.uniqueName("cli-restart")
        let before = try await TestBroker.connect()
        let channel = try await before.openChannel()
        try await channel.queueDeclare(queue, durable: true)
        try await channel.confirmSelect()
        let persistent = RabbitMQProperties(deliveryMode: .persistent)
        #expect(try await channel.publishAndWaitForConfirm(Array("before".utf8), routingKey: queue, properties: persistent) == .acked)
        try await before.close()

        // The idle timeout bounds a failure to come back (the result then lacks "after").
        let consumer = Task {
            // --prefetch 1, so that the first message is acknowledged before the second arrives.
            try await RMQTool.run(["consume", "--queue", queue, "--count", "2", "--prefetch", "1", "--idle-timeout", "120"])
        }
        try await eventually(timeout: .seconds(60), "rmq to acknowledge the first message") {
            let listing = try await TestBroker.ctl("list_queues", "--no-table-headers", "--silent", "name", "messages")
            return listing.split(separator: "\n").contains { $0 == "\(queue)\t0" }
        }
        try await TestBroker.ctl("stop_app")
        try await TestBroker.ctl("start_app")

        let after = try await TestBroker.connect()
        let afterChannel = try await after.openChannel()
        try await afterChannel.confirmSelect()
        #expect(try await afterChannel.publishAndWaitForConfirm(Array("after".utf8), routingKey: queue, properties: persistent) == .acked)
        let result = try await consumer.value
        #expect(result.status == 0, "\(result)")
        #expect(try result.jsonLines().compactMap { $0["body"] as? String } == ["before", "after"], "\(result)")
        try await afterChannel.queueDelete(queue)
        try await after.close()
    }
}
