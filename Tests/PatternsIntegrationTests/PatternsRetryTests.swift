import Foundation
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

struct Job: Codable, Sendable, Equatable {
    var id: String
}

/// The retry ladder against a real broker: delays, headers, parking, poison messages.
@Suite("Patterns: retry", .timeLimit(.minutes(2)))
struct PatternsRetryTests {
    static let delays: [Duration] = [.milliseconds(300), .milliseconds(600), .milliseconds(900)]

    static func envelope(_ id: String) -> RabbitMQEnvelope<Job> {
        RabbitMQEnvelope(type: "jobs.job.requested", data: Job(id: id))
    }

    /// Declares a retry queue, runs its consumer with `handler` while `body` runs, then deletes it.
    static func withRetryQueue(
        delays: [Duration] = delays,
        handler: @escaping @Sendable (RabbitMQRetryAttempt<Job>) async throws -> Void,
        _ body: @escaping @Sendable (RabbitMQRetryQueue, RabbitMQChannel) async throws -> Void
    ) async throws {
        let connection = try await TestBroker.connect()
        let queue = try await RabbitMQRetryQueue.declare(
            TestBroker.uniqueName("jobs"), on: connection, configuration: .init(delays: delays))
        let channel = try await connection.openChannel()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await queue.run(Job.self, handler: handler) }
            defer { group.cancelAll() }
            try await body(queue, channel)
        }
        try await queue.delete()
        try await connection.close()
    }

    /// The first message parked in the dead-letter queue, acknowledged.
    static func firstParked(_ queue: RabbitMQRetryQueue, on channel: RabbitMQChannel) async throws -> RabbitMQDelivery {
        let consumer = try await channel.consume(queue: queue.deadLetterQueue)
        var iterator = consumer.makeAsyncIterator()
        let delivery = try #require(try await iterator.next())
        try delivery.ack()
        try await consumer.cancel()
        return delivery
    }

    @Test func eachRetryWaitsAtLeastItsDelayAndTheLastFailureIsParkedWithItsHistory() async throws {
        let recorder = AttemptRecorder()
        let started = Date()
        try await Self.withRetryQueue(handler: { attempt in
            recorder.record(attempt)
            throw TestSupportError("failure \(attempt.attempt)")
        }) { queue, channel in
            try await queue.publish(Self.envelope("j-1"))
            let parked = try await Self.firstParked(queue, on: channel)

            let attempts = recorder.all
            #expect(attempts.map(\.number) == [1, 2, 3, 4])
            #expect(attempts.map(\.lastError) == [nil, "failure 1", "failure 2", "failure 3"])
            for (index, delay) in Self.delays.enumerated() {
                // A lower bound the broker guarantees: a message leaves a delay queue only when its TTL is up.
                let gap = attempts[index + 1].at - attempts[index].at
                #expect(gap >= delay, "attempt \(index + 2) came \(gap) after attempt \(index + 1), delay \(delay)")
            }

            let headers = try #require(parked.properties.headers)
            #expect(headers[RabbitMQRetryQueue.retryCountHeader]?.int64Value == 3)
            #expect(headers[RabbitMQRetryQueue.lastErrorHeader] == .string("failure 4"))
            #expect(headers[RabbitMQRetryQueue.deadLetterReasonHeader] == .string("retries-exhausted"))
            let firstFailure = try #require(headers[RabbitMQRetryQueue.firstFailureAtHeader]?.stringValue)
            let firstFailureDate = try #require(try? Date(firstFailure, strategy: .iso8601))
            #expect(firstFailureDate >= started.addingTimeInterval(-1) && firstFailureDate <= Date())
            #expect(headers["x-death"] == nil, "the broker's own history is not carried over")
            #expect(try parked.envelope(Job.self).data == Job(id: "j-1"))
            #expect(parked.properties.contentType == "application/json")

            for name in [queue.workQueue, queue.deadLetterQueue] + queue.delayQueues {
                #expect(try await channel.queueDeclare(name, passive: true).messageCount == 0, "\(name) is empty")
            }
        }
    }

    @Test func aMessageThatSucceedsOnItsSecondAttemptIsAcknowledged() async throws {
        let recorder = AttemptRecorder()
        try await Self.withRetryQueue(handler: { attempt in
            recorder.record(attempt)
            if attempt.attempt == 1 { throw TestSupportError("transient") }
        }) { queue, channel in
            try await queue.publish(Self.envelope("j-2"))
            var events = recorder.stream.makeAsyncIterator()
            #expect(await events.next()?.number == 1)
            let second = await events.next()
            #expect(second?.number == 2)
            #expect(second?.lastError == "transient")
            // Settled once the consumer acks; there is no event for that, so ask the broker.
            try await eventually("the work queue to be settled") {
                let listing = try await TestBroker.ctl(
                    "list_queues", "--no-table-headers", "--silent", "name", "messages")
                return listing.split(separator: "\n").contains { $0 == "\(queue.workQueue)\t0" }
            }
            #expect(try await channel.queueDeclare(queue.deadLetterQueue, passive: true).messageCount == 0)
            #expect(recorder.all.count == 2)
        }
    }

    @Test func aPoisonMessageIsParkedOnceWithItsReasonAndNeverHandled() async throws {
        let recorder = AttemptRecorder()
        try await Self.withRetryQueue(handler: { attempt in
            recorder.record(attempt)
            if attempt.data.id == "refuse" { throw RabbitMQPatternsError.permanentFailure("customer unknown") }
        }) { queue, channel in
            try await channel.confirmSelect()
            #expect(try await channel.publishAndWaitForConfirm(
                Array(#"{"id": "not an envelope"}"#.utf8), exchange: queue.workExchange, routingKey: queue.name) == .acked)
            try await queue.publish(Self.envelope("refuse"))
            try await queue.publish(Self.envelope("sentinel"))

            // One consumer, one message at a time: when the sentinel arrives, the two before it
            // have been parked (confirmed) and acknowledged.
            var events = recorder.stream.makeAsyncIterator()
            #expect(await events.next()?.id == "refuse")
            #expect(await events.next()?.id == "sentinel")
            #expect(recorder.all.map(\.id) == ["refuse", "sentinel"], "the poison message never reached the handler")
            #expect(try await channel.queueDeclare(queue.deadLetterQueue, passive: true).messageCount == 2)

            let poison = try #require(try await channel.get(queue: queue.deadLetterQueue, autoAck: true))
            #expect(poison.bodyString == #"{"id": "not an envelope"}"#)
            let headers = try #require(poison.properties.headers)
            #expect(headers[RabbitMQRetryQueue.deadLetterReasonHeader] == .string("invalid-envelope"))
            #expect(headers[RabbitMQRetryQueue.retryCountHeader]?.int64Value == 0)
            let reason = try #require(headers[RabbitMQRetryQueue.lastErrorHeader]?.stringValue)
            #expect(reason.contains("invalid envelope") && reason.contains("'id'"), "\(reason)")

            let refused = try #require(try await channel.get(queue: queue.deadLetterQueue, autoAck: true))
            #expect(refused.properties.headers?[RabbitMQRetryQueue.deadLetterReasonHeader] == .string("permanent-failure"))
            #expect(refused.properties.headers?[RabbitMQRetryQueue.lastErrorHeader] == .string("customer unknown"))
            #expect(try await channel.get(queue: queue.deadLetterQueue, autoAck: true) == nil, "parked exactly once")
            for name in queue.delayQueues {
                #expect(try await channel.queueDeclare(name, passive: true).messageCount == 0)
            }
        }
    }

    @Test func declaringTheSameQueueTwiceIsIdempotent() async throws {
        let connection = try await TestBroker.connect()
        let name = TestBroker.uniqueName("twice")
        let first = try await RabbitMQRetryQueue.declare(name, on: connection)
        let second = try await RabbitMQRetryQueue.declare(name, on: connection)
        #expect(second.delayQueues == ["\(name).retry.1s", "\(name).retry.5s", "\(name).retry.25s"])
        #expect(second.deadLetterQueue == "\(name).dead-letter")
        try await first.delete()
        try await connection.close()
    }
}

/// What `run` does when it cannot republish.
@Suite("Patterns: retry failures", .timeLimit(.minutes(2)))
struct PatternsRetryFailureTests {
    /// A republish that fails (the dead-letter queue was deleted: unroutable) ends `run` with
    /// the error, and the message goes back to the work queue; `run` never hangs.
    @Test func aFailedRepublishEndsRunAndRequeuesTheMessage() async throws {
        let connection = try await TestBroker.connect()
        let retry = try await RabbitMQRetryQueue.declare(TestBroker.uniqueName("jobs"), on: connection)
        let channel = try await connection.openChannel()
        try await channel.queueDelete(retry.deadLetterQueue)
        try await retry.publish(PatternsRetryTests.envelope("doomed"))
        do {
            try await withTimeout(.seconds(60), "run() to end") {
                try await retry.run(Job.self) { _ in throw RabbitMQPatternsError.permanentFailure("cannot succeed") }
            }
            Issue.record("run() returned without an error")
        } catch let error as RabbitMQPatternsError {
            #expect(error.code == .unroutable, "\(error)")
        }
        try await eventually("the message to be back in the work queue") {
            try await TestBroker.queueState(retry.workQueue)?.messageCount == 1
        }
        try await retry.delete()
        try await connection.close()
    }
}
