import Testing

@testable import RabbitMQ

@Suite("Queue types and stream offsets, without a broker")
struct QueueTypeTests {
    func arguments(
        _ type: RabbitMQQueueType, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
        _ arguments: RabbitMQFieldTable = [:]
    ) throws(RabbitMQError) -> RabbitMQFieldTable {
        try type.declarationArguments(durable: durable, exclusive: exclusive, autoDelete: autoDelete, arguments: arguments)
    }

    func refusal(_ body: () throws(RabbitMQError) -> Void) -> RabbitMQError? {
        do {
            try body()
            return nil
        } catch {
            return error
        }
    }

    @Test func quorumArgumentsHaveTheirAMQPTypes() throws {
        #expect(try arguments(.quorum) == ["x-queue-type": "quorum"])
        let table = try arguments(.quorum(deliveryLimit: 5, initialGroupSize: 3), ["x-dead-letter-exchange": "dlx"])
        #expect(
            table == [
                "x-dead-letter-exchange": "dlx", "x-queue-type": .string("quorum"), "x-delivery-limit": .int64(5),
                "x-quorum-initial-group-size": .int64(3),
            ])
        #expect(try arguments(.quorum(deliveryLimit: .unlimited))["x-delivery-limit"] == .int64(-1))
        #expect(try arguments(.quorum(deliveryLimit: .limit(0)))["x-delivery-limit"] == .int64(0))
    }

    /// RabbitMQ 3.x has no default delivery limit but takes -1 as "drop at the first
    /// return": an unlimited limit is left out there.
    @Test func anUnlimitedDeliveryLimitIsLeftOutForRabbitMQ3() throws {
        func limit(_ version: String?) throws -> RabbitMQFieldValue? {
            try RabbitMQQueueType.quorum(deliveryLimit: .unlimited).declarationArguments(
                durable: true, exclusive: false, autoDelete: false, arguments: [:], brokerVersion: version)["x-delivery-limit"]
        }
        #expect(try limit("3.10.8") == nil)
        #expect(try limit("3.13.7") == nil)
        #expect(try limit("4.0.5") == .int64(-1))
        #expect(try limit("4.3.0-beta.1") == .int64(-1))
        #expect(try limit(nil) == .int64(-1))
        #expect(try limit("unknown") == .int64(-1))
        let five = try RabbitMQQueueType.quorum(deliveryLimit: 5).declarationArguments(
            durable: true, exclusive: false, autoDelete: false, arguments: [:], brokerVersion: "3.10.8")
        #expect(five["x-delivery-limit"] == .int64(5))
    }

    @Test func streamArgumentsHaveTheirAMQPTypes() throws {
        #expect(try arguments(.stream) == ["x-queue-type": "stream"])
        let table = try arguments(.stream(maxLengthBytes: 1 << 30, maxSegmentSizeBytes: 1 << 20, maxAge: .seconds(3600)))
        #expect(
            table == [
                "x-queue-type": "stream", "x-max-length-bytes": .int64(1 << 30),
                "x-stream-max-segment-size-bytes": .int64(1 << 20), "x-max-age": .string("3600s"),
            ])
    }

    @Test func classicNamesItsTypeAndAllowsEverything() throws {
        #expect(try arguments(.classic, durable: false, exclusive: true, autoDelete: true) == ["x-queue-type": "classic"])
    }

    @Test(arguments: [RabbitMQQueueType.quorum, .quorum(deliveryLimit: 3), .stream, .stream(maxLengthBytes: 10)])
    func replicatedTypesRefuseWhatTheBrokerRefuses(_ type: RabbitMQQueueType) {
        for (durable, exclusive, autoDelete, word) in [
            (false, false, false, "durable"), (true, true, false, "exclusive"), (true, false, true, "auto-delete"),
        ] {
            let error = refusal { () throws(RabbitMQError) in
                _ = try arguments(type, durable: durable, exclusive: exclusive, autoDelete: autoDelete)
            }
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.scope == RabbitMQError.Scope.none)
            #expect(error?.message.contains(word) == true, "\(error?.message ?? "accepted")")
        }
    }

    @Test func limitsOutOfRangeAreRefused() {
        let refused: [RabbitMQQueueType] = [
            .quorum(deliveryLimit: .limit(-2)), .quorum(initialGroupSize: 0), .stream(maxLengthBytes: 0),
            .stream(maxSegmentSizeBytes: 0), .stream(maxSegmentSizeBytes: 3_000_000_001), .stream(maxAge: .zero),
            .stream(maxAge: .milliseconds(1500)), .stream(maxAge: .seconds(-5)),
        ]
        for type in refused {
            let error = refusal { () throws(RabbitMQError) in _ = try arguments(type) }
            #expect(error?.code == .invalidConfiguration, "\(type) was not refused")
        }
        #expect(refusal { () throws(RabbitMQError) in _ = try arguments(.stream(maxSegmentSizeBytes: 3_000_000_000)) } == nil)
    }

    @Test func argumentsThatContradictTheTypeAreRefused() throws {
        let error = refusal { () throws(RabbitMQError) in _ = try arguments(.quorum, ["x-queue-type": "stream"]) }
        #expect(error?.code == .invalidConfiguration)
        let limit = refusal { () throws(RabbitMQError) in
            _ = try arguments(.quorum(deliveryLimit: 5), ["x-delivery-limit": 6])
        }
        #expect(limit?.code == .invalidConfiguration)
        // The same value twice is no contradiction.
        #expect(try arguments(.quorum(deliveryLimit: 5), ["x-queue-type": "quorum", "x-delivery-limit": 5]).count == 2)
        // Found in review: nor is the same number in another integer width.
        #expect(try arguments(.quorum(deliveryLimit: 5), ["x-delivery-limit": .int32(5)]).count == 2)
        let wider = refusal { () throws(RabbitMQError) in
            _ = try arguments(.quorum(deliveryLimit: 5), ["x-delivery-limit": .int16(6)])
        }
        #expect(wider?.code == .invalidConfiguration)
    }

    @Test func streamOffsetsBecomeTheirAMQPValues() {
        #expect(RabbitMQStreamOffset.first.argument == .string("first"))
        #expect(RabbitMQStreamOffset.last.argument == .string("last"))
        #expect(RabbitMQStreamOffset.next.argument == .string("next"))
        #expect(RabbitMQStreamOffset.offset(0).argument == .int64(0))
        #expect(RabbitMQStreamOffset.offset(9_999).argument == .int64(9_999))
        #expect(RabbitMQStreamOffset.timestamp(secondsSince1970: 1_700_000_000).argument == .timestamp(1_700_000_000))
    }

    @Test func aStreamConsumerNeedsAPrefetchAndManualAcks() throws {
        let table = try StreamConsumeCheck.arguments(offset: .offset(7), prefetch: 10, arguments: ["x-priority": 1])
        #expect(table == ["x-priority": 1, "x-stream-offset": .int64(7)])
        for (offset, prefetch, given) in [
            (RabbitMQStreamOffset.first, UInt16(0), RabbitMQFieldTable()),
            (.offset(UInt64(Int64.max) + 1), 10, [:]),
            (.first, 10, ["x-stream-offset": "last"]),
        ] {
            let error = refusal { () throws(RabbitMQError) in
                _ = try StreamConsumeCheck.arguments(offset: offset, prefetch: prefetch, arguments: given)
            }
            #expect(error?.code == .invalidConfiguration)
        }
        // The general consume: only a consumer that names an offset is checked.
        let stream: RabbitMQFieldTable = ["x-stream-offset": "first"]
        let autoAck = refusal { () throws(RabbitMQError) in
            try StreamConsumeCheck.check(arguments: stream, noAck: true, perConsumerPrefetch: 10)
        }
        #expect(autoAck?.message.contains("auto-ack") == true)
        let noPrefetch = refusal { () throws(RabbitMQError) in
            try StreamConsumeCheck.check(arguments: stream, noAck: false, perConsumerPrefetch: 0)
        }
        #expect(noPrefetch?.message.contains("prefetch") == true)
        #expect(refusal { () throws(RabbitMQError) in try StreamConsumeCheck.check(arguments: stream, noAck: false, perConsumerPrefetch: 1) } == nil)
        #expect(refusal { () throws(RabbitMQError) in try StreamConsumeCheck.check(arguments: [:], noAck: true, perConsumerPrefetch: 0) } == nil)
    }

    @Test func deliveriesReadTheirCountAndOffsetFromTheHeaders() {
        func delivery(_ headers: RabbitMQFieldTable?) -> RabbitMQDelivery {
            RabbitMQDelivery(
                body: [], properties: RabbitMQProperties(headers: headers), exchange: "", routingKey: "q",
                redelivered: false, deliveryTag: 1, consumerTag: "c", messageCount: nil, channel: nil, epoch: 0)
        }
        #expect(delivery(nil).deliveryCount == nil)
        #expect(delivery(nil).streamOffset == nil)
        #expect(delivery(["x-delivery-count": .int64(3)]).deliveryCount == 3)
        #expect(delivery(["x-delivery-count": .int32(2)]).deliveryCount == 2)
        #expect(delivery(["x-delivery-count": "3"]).deliveryCount == nil)
        #expect(delivery(["x-stream-offset": .int64(42)]).streamOffset == 42)
        #expect(delivery(["x-stream-offset": .int64(-1)]).streamOffset == nil)
    }
}
