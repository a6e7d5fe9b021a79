import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import ServiceLifecycleTestKit
import Testing

/// The retry ladder and what an operator or a reconnect does to it: a parked message
/// replayed into the work queue, a republish whose acknowledgement crossed a reconnect.
@Suite("Patterns: retry replay and reconnects", .timeLimit(.minutes(3)))
struct PatternsRetryReplayTests {
    /// What an operator does with a parked message (a shovel, a manual move): publish it, as
    /// it is, to the work exchange.
    static func replay(_ parked: RabbitMQDelivery, into queue: RabbitMQRetryQueue, on channel: RabbitMQChannel) async throws {
        try await channel.confirmSelect()
        #expect(
            try await channel.publishAndWaitForConfirm(
                parked.body, exchange: queue.workExchange, routingKey: queue.name, properties: parked.properties) == .acked)
    }

    @Test func aMessageReplayedFromTheParkingQueueStartsANewLadder() async throws {
        let recorder = AttemptRecorder()
        try await PatternsRetryTests.withRetryQueue(delays: [.milliseconds(100)], handler: { attempt in
            recorder.record(attempt)
            throw TestSupportError("failure \(attempt.attempt)")
        }) { queue, channel in
            try await queue.publish(PatternsRetryTests.envelope("again"))
            let parked = try await PatternsRetryTests.firstParked(queue, on: channel)
            #expect(parked.properties.headers?[RabbitMQRetryQueue.retryCountHeader]?.int64Value == 1)

            try await Self.replay(parked, into: queue, on: channel)
            let parkedAgain = try await PatternsRetryTests.firstParked(queue, on: channel)
            #expect(recorder.all.map(\.number) == [1, 2, 1, 2], "the replayed message climbed the ladder again")
            let headers = try #require(parkedAgain.properties.headers)
            #expect(headers[RabbitMQRetryQueue.retryCountHeader]?.int64Value == 1)
            #expect(headers[RabbitMQRetryQueue.deadLetterReasonHeader] == .string("retries-exhausted"))
            #expect(headers[RabbitMQRetryQueue.replayCountHeader]?.int64Value == 1)
            #expect(headers[RabbitMQRetryQueue.previousRetryCountHeader]?.int64Value == 1)
        }
    }

    /// A length-limit policy on the work queue makes the broker drop its oldest message; the
    /// work queue dead-letters it into the parking queue instead of losing it.
    @Test func whatTheBrokerDropsFromAClassicWorkQueueIsParked() async throws {
        let connection = try await TestBroker.connect()
        let name = TestBroker.uniqueName("maxlen")
        let retry = try await RabbitMQRetryQueue.declare(
            name, on: connection, configuration: .init(delays: PatternsRetryTests.delays))
        let policy = name + "-limit"
        try await TestBroker.ctl("set_policy", policy, "^\(name)$", #"{"max-length": 1}"#, "--apply-to", "queues")
        try await eventually("the policy to apply to the work queue") {
            let listing = try await TestBroker.ctl("list_queues", "--no-table-headers", "--silent", "name", "policy")
            return listing.split(separator: "\n").contains { $0 == "\(name)\t\(policy)" }
        }
        // No consumer: the second message pushes the first out of the head of the queue.
        try await retry.publish(PatternsRetryTests.envelope("pushed-out"))
        try await retry.publish(PatternsRetryTests.envelope("kept"))
        try await eventually("the pushed-out message to be parked") {
            try await TestBroker.queueState(retry.deadLetterQueue)?.messageCount == 1
        }
        let channel = try await connection.openChannel()
        let parked = try #require(try await channel.get(queue: retry.deadLetterQueue, autoAck: true))
        #expect(try parked.envelope(Job.self).data == Job(id: "pushed-out"))
        let death = try #require(parked.properties.headers?["x-death"])
        #expect("\(death)".contains("maxlen"), "\(death)")
        try await TestBroker.ctl("clear_policy", policy)
        try await retry.delete()
        try await connection.close()
    }

    /// The handler fails while the connection is lost: the broker hands the message out again
    /// on the recovered connection and that copy climbs to the delay queue; the first
    /// handler's republish, whose acknowledgement can no longer reach the broker, must not
    /// put a second copy on the ladder.
    @Test func aRetryWhoseAcknowledgementCrossedAReconnectClimbsTheLadderOnce() async throws {
        let name = TestBroker.uniqueName("retry-reconnect")
        let connection = try await TestBroker.connect(name: name)
        let events = connection.events()
        // A delay no test outlives: the copies stay in the delay queue to be counted.
        let retry = try await RabbitMQRetryQueue.declare(
            TestBroker.uniqueName("rjobs"), on: connection, configuration: .init(delays: [.seconds(3600)]))
        let delayQueue = try #require(retry.delayQueues.first)
        try await retry.publish(PatternsRetryTests.envelope("once"))
        let calls = Recorded<Int>()
        let entered = Gate()
        let release = Gate()
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await retry.run(Job.self) { attempt in
                        calls.append(attempt.attempt)
                        if calls.all.count == 1 {
                            entered.open()
                            await release.wait()
                        }
                        throw TestSupportError("failure")
                    }
                }
                await entered.wait()
                try await TestBroker.closeConnection(named: name)
                for await event in events {
                    if case .recovered = event { break }
                }
                try await eventually("the redelivered copy to reach the delay queue") {
                    try await TestBroker.queueState(delayQueue)?.messageCount == 1
                }
                // And its retry to be confirmed and the copy acknowledged (the work queue holds
                // nothing, unacknowledged included): only a confirmed retry makes the first
                // handler's redundant; one still in flight may yet fail (the documented bound).
                try await eventually("the redelivered copy to be acknowledged") {
                    let listing = try await TestBroker.ctl(
                        "list_queues", "name", "messages", "--no-table-headers", "--silent")
                    return listing.split(whereSeparator: \.isNewline).contains { line in
                        let fields = line.split(whereSeparator: \.isWhitespace)
                        return fields.count == 2 && fields[0] == retry.workQueue && fields[1] == "0"
                    }
                }
                release.open()
                // Graceful shutdown lets the first handler finish and settle its message.
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(calls.all == [1, 1])
        #expect(try await TestBroker.queueState(delayQueue)?.messageCount == 1, "one copy on the ladder")
        #expect(try await TestBroker.queueState(retry.workQueue)?.messageCount == 0)
        try await retry.delete()
        try await connection.close()
    }
}
