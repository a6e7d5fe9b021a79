import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

/// The retry pattern on quorum queues, and how it meets the broker's delivery limit
/// (RabbitMQ 3.10 and 4.0 alike).
@Suite("Patterns: retry on quorum queues", .timeLimit(.minutes(2)))
struct PatternsQuorumRetryTests {
    /// The queue types the broker reports, by name.
    static func queueTypes() async throws -> [String: String] {
        let listing = try await TestBroker.ctl("list_queues", "--no-table-headers", "--silent", "name", "type")
        var types: [String: String] = [:]
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            if fields.count == 2 { types[String(fields[0])] = String(fields[1]) }
        }
        return types
    }

    /// Failed attempts never use up the delivery limit: each is republished as a new message
    /// and the original acknowledged, so every attempt is a first delivery, even with a limit
    /// lower than the number of attempts.
    @Test func theLadderRunsOnQuorumQueuesWithoutUsingUpTheDeliveryLimit() async throws {
        let connection = try await TestBroker.connect()
        let retry = try await RabbitMQRetryQueue.declare(
            TestBroker.uniqueName("qjobs"), on: connection,
            configuration: .init(delays: PatternsRetryTests.delays, quorum: true, deliveryLimit: 1))
        let types = try await Self.queueTypes()
        for name in [retry.workQueue, retry.deadLetterQueue] + retry.delayQueues {
            #expect(types[name] == "quorum", "\(name) is \(types[name] ?? "missing")")
        }
        let counts = Recorded<Int>()
        let channel = try await connection.openChannel()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await retry.run(Job.self) { attempt in
                    counts.append(attempt.deliveryCount ?? 0)
                    throw TestSupportError("failure \(attempt.attempt)")
                }
            }
            defer { group.cancelAll() }
            try await retry.publish(PatternsRetryTests.envelope("q-1"))
            let parked = try await PatternsRetryTests.firstParked(retry, on: channel)
            let headers = try #require(parked.properties.headers)
            #expect(headers[RabbitMQRetryQueue.deadLetterReasonHeader] == .string("retries-exhausted"))
            #expect(headers[RabbitMQRetryQueue.retryCountHeader]?.int64Value == 3)
            #expect(headers["x-delivery-count"] == nil)
        }
        #expect(counts.all == [0, 0, 0, 0], "four attempts, each a first delivery")
        try await retry.delete()
        try await connection.close()
    }

    /// A message whose consumer keeps stopping while handling it comes back unsettled each
    /// time; the work queue counts that, and at its delivery limit parks it with the broker's
    /// reason instead of handing it out forever. Our own attempt counter is untouched.
    @Test func aMessageWhoseConsumerKeepsStoppingIsParkedAtTheDeliveryLimit() async throws {
        let connection = try await TestBroker.connect()
        let retry = try await RabbitMQRetryQueue.declare(
            TestBroker.uniqueName("qcrash"), on: connection,
            configuration: .init(delays: PatternsRetryTests.delays, quorum: true, deliveryLimit: 2))
        try await retry.publish(PatternsRetryTests.envelope("crash"))
        let seen = Recorded<(attempt: Int, deliveryCount: Int)>()
        for round in 1...3 {
            let (started, handling) = AsyncStream.makeStream(of: Void.self)
            let run = Task {
                try await retry.run(Job.self) { attempt in
                    seen.append((attempt.attempt, attempt.deliveryCount ?? 0))
                    handling.yield()
                    // Stands for a handler that never finishes: it ends only when run() is cancelled.
                    try await Task.sleep(for: .seconds(600))
                }
            }
            var events = started.makeAsyncIterator()
            _ = await events.next()
            run.cancel()
            try await run.value
            #expect(seen.all.count == round)
        }
        let channel = try await connection.openChannel()
        let parked = try await PatternsRetryTests.firstParked(retry, on: channel)
        #expect(seen.all.map(\.attempt) == [1, 1, 1], "no attempt failed")
        #expect(seen.all.map(\.deliveryCount) == [0, 1, 2])
        let headers = try #require(parked.properties.headers)
        #expect(headers[RabbitMQRetryQueue.deadLetterReasonHeader] == nil)
        let death = try #require(headers["x-death"])
        #expect("\(death)".contains("delivery_limit"), "\(death)")
        #expect(try parked.envelope(Job.self).data == Job(id: "crash"))
        #expect(try await channel.queueDeclare(retry.workQueue, passive: true).messageCount == 0)

        // Replayed into the work queue, it is recognised by the broker's x-death entry for the
        // work queue and starts a new ladder.
        try await PatternsRetryReplayTests.replay(parked, into: retry, on: channel)
        let (handled, handling) = AsyncStream.makeStream(of: RabbitMQRetryAttempt<Job>.self)
        let run = Task { try await retry.run(Job.self) { attempt in handling.yield(attempt) } }
        var attempts = handled.makeAsyncIterator()
        let replayed = try #require(await attempts.next())
        run.cancel()
        try await run.value
        #expect(replayed.attempt == 1)
        #expect(replayed.replayCount == 1)
        #expect(replayed.previousRetryCount == 0, "no attempt had failed")
        try await retry.delete()
        try await connection.close()
    }

    @Test func aQuorumRetryQueueMustBeDurableAndALimitNeedsQuorum() async throws {
        let connection = try await TestBroker.connect()
        for configuration in [
            RabbitMQRetryQueue.Configuration(durable: false, quorum: true),
            RabbitMQRetryQueue.Configuration(deliveryLimit: 3),
        ] {
            let error = await #expect(throws: RabbitMQPatternsError.self) {
                _ = try await RabbitMQRetryQueue.declare(TestBroker.uniqueName("qbad"), on: connection, configuration: configuration)
            }
            #expect(error?.code == .invalidConfiguration)
        }
        try await connection.close()
    }
}
