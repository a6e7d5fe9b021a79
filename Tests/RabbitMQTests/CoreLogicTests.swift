import Testing

@testable import RabbitMQ

@Suite("Broker-free logic")
struct CoreLogicTests {
    @Test func messagesDescribeTheirFieldsNotTheirBox() {
        var properties = RabbitMQProperties(contentType: "application/json", deliveryMode: .persistent, priority: 2)
        properties.headers = ["event_type": "order.created"]
        properties.correlationID = "c-1"
        #expect(properties.description == #"RabbitMQProperties(contentType: "application/json", headers: ["event_type": string("order.created")], deliveryMode: persistent, priority: 2, correlationID: "c-1")"#)
        #expect(RabbitMQProperties().description == "RabbitMQProperties()")

        let delivery = RabbitMQDelivery(
            body: Array("secret".utf8), properties: RabbitMQProperties(appID: "a"), exchange: "", routingKey: "orders",
            redelivered: true, deliveryTag: 7, consumerTag: "ctag", messageCount: nil, channel: nil, epoch: 0)
        #expect(delivery.description == #"RabbitMQDelivery(deliveryTag: 7, exchange: "", routingKey: "orders", redelivered: true, consumerTag: "ctag", properties: RabbitMQProperties(appID: "a"), body: 6 bytes)"#)
        #expect(!"\(delivery)".contains("secret"))
    }

    @Test(.timeLimit(.minutes(1))) func aSecondTaskIteratingAtOnceGetsAnErrorAndTheFirstKeepsWaiting() async {
        let buffer = DeliveryBuffer()
        await withTaskGroup(of: Int.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    do {
                        return try await buffer.nextBatch(returning: []).0.count
                    } catch {
                        #expect((error as? RabbitMQError)?.code == .invalidConfiguration, "\(error)")
                        return -1
                    }
                }
            }
            // Nothing is buffered, so whichever task asks second is refused while the first waits.
            let refused = await group.next()
            #expect(refused == -1)
            let delivery = RabbitMQDelivery(
                body: [1], properties: RabbitMQProperties(), exchange: "", routingKey: "q", redelivered: false,
                deliveryTag: 1, consumerTag: "c", messageCount: nil, channel: nil, epoch: 0)
            #expect(buffer.push(delivery) == .needsWake)
            buffer.wake()
            let served = await group.next()
            #expect(served == 1, "the first waiter still gets the delivery")
        }
    }

    @Test func channelNumbersReuseTheLowestFree() {
        var allocator = ChannelNumberAllocator(max: 3)
        #expect(allocator.allocate() == 1)
        #expect(allocator.allocate() == 2)
        #expect(allocator.allocate() == 3)
        #expect(allocator.allocate() == nil)
        allocator.release(2)
        #expect(allocator.allocate() == 2)
        allocator.release(1)
        allocator.release(3)
        #expect(allocator.allocate() == 1)
        #expect(allocator.allocate() == 3)
    }

    @Test func replyCodesHaveNamesAndScopes() {
        let error = RabbitMQError.serverClose(
            scope: .channel, replyCode: 406, replyText: "PRECONDITION_FAILED - inequivalent arg 'durable'",
            classID: 50, methodID: 10)
        #expect(error.code == .preconditionFailed)
        #expect(error.replyCode == 406)
        #expect(error.scope == .channel)
        #expect(error.description.contains("406 PRECONDITION_FAILED"))
        #expect(error.description.contains("class 50, method 10"))
        #expect(!error.isRetriable)
        #expect(RabbitMQError.Code.reply(320) == .connectionForced)
        #expect(RabbitMQError(code: .connectionForced, message: "x").isRetriable)
        for code: UInt16 in [320, 403, 404, 405, 406, 501, 502, 503, 504, 505, 506, 530, 540, 541] {
            #expect(RabbitMQError.Code.reply(code).description != "\(code) UNKNOWN")
        }
    }

    @Test func confirmTicketResolvesEveryWaiterOnce() async throws {
        let ticket = ConfirmTicket()
        async let first = ticket.wait()
        async let second = ticket.wait()
        ticket.resolve(.success(.acked))
        ticket.resolve(.success(.nacked))  // ignored: a ticket resolves once
        #expect(try await first == .acked)
        #expect(try await second == .acked)
        #expect(try await ticket.wait() == .acked)
    }

    @Test func requestsAMQPCannotCarryAreRefusedWhereTheyAreMade() throws {
        let longest = String(repeating: "n", count: 255)
        try ChannelRequest.queueDeclare(name: longest, passive: false, durable: false, exclusive: false, autoDelete: false, arguments: [:])
            .check(frameMax: 4096)
        let tooLong = ChannelRequest.queueBind(queue: "q", exchange: "x", routingKey: longest + "n", arguments: [:])
        #expect(throws: RabbitMQError.self) { try tooLong.check(frameMax: 131_072) }
        try ConsumeRequest(queue: "q", consumerTag: longest, noAck: false, exclusive: false, arguments: [:]).check(frameMax: 4096)
        #expect(throws: RabbitMQError.self) {
            try ConsumeRequest(queue: "q", consumerTag: longest + "n", noAck: false, exclusive: false, arguments: [:]).check(frameMax: 4096)
        }
        // Arguments: fits in a larger frame, not in the smallest.
        let arguments: RabbitMQFieldTable = ["x-big": .string(String(repeating: "a", count: 5_000))]
        let declare = ChannelRequest.exchangeDeclare(name: "x", type: "direct", passive: false, durable: false, autoDelete: false, internal: false, arguments: arguments)
        try declare.check(frameMax: 8192)
        let error = #expect(throws: RabbitMQError.self) { try declare.check(frameMax: 4096) }
        #expect(error?.code == .invalidConfiguration && error?.message.contains("frame_max") == true)
        var deep: RabbitMQFieldValue = .int32(1)
        for _ in 0..<RabbitMQFieldTable.maxDepth { deep = .table(["d": deep]) }
        #expect(throws: RabbitMQError.self) {
            try ChannelRequest.queueDeclare(name: "q", passive: false, durable: false, exclusive: false, autoDelete: false, arguments: ["d": deep])
                .check(frameMax: 131_072)
        }
        let longKey: RabbitMQFieldTable = ["ok": .array([.table([String(repeating: "k", count: 256): "v"])])]
        #expect(throws: RabbitMQError.self) {
            try ConsumeRequest(queue: "q", consumerTag: "c", noAck: false, exclusive: false, arguments: longKey).check(frameMax: 131_072)
        }
        try ChannelRequest.basicQos(prefetchCount: 1, global: false).check(frameMax: 4096)
    }
}
