import RabbitMQ
import RabbitMQPatterns
import Testing

@Suite("Queue options")
struct QueueOptionsTests {
    @Test func optionsBecomeQueueArguments() throws {
        let options = RabbitMQQueueOptions(
            messageTTL: .milliseconds(1500), maxLength: 10, overflow: .rejectPublish, deadLetterExchange: "dlx",
            deadLetterRoutingKey: "dead", quorum: true, arguments: ["x-max-priority": 5])
        let arguments = try options.queueArguments()
        #expect(arguments["x-message-ttl"] == .int64(1500))
        #expect(arguments["x-max-length"] == .int64(10))
        #expect(arguments["x-overflow"] == .string("reject-publish"))
        #expect(arguments["x-dead-letter-exchange"] == .string("dlx"))
        #expect(arguments["x-dead-letter-routing-key"] == .string("dead"))
        #expect(arguments["x-queue-type"] == .string("quorum"))
        #expect(arguments["x-max-priority"] == .int64(5))
        #expect(try RabbitMQQueueOptions().queueArguments().isEmpty)
        #expect(RabbitMQQueueOptions.Overflow.dropHead.name == "drop-head")
    }

    @Test func impossibleOptionsAreRefused() {
        #expect(throws: RabbitMQPatternsError.self) { try RabbitMQQueueOptions(durable: false, quorum: true).queueArguments() }
        #expect(throws: RabbitMQPatternsError.self) { try RabbitMQQueueOptions(messageTTL: .seconds(-1)).queueArguments() }
        #expect(throws: RabbitMQPatternsError.self) { try RabbitMQQueueOptions(maxLength: -1).queueArguments() }
    }
}
