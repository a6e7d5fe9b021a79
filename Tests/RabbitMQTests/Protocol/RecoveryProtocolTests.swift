import Testing

@testable import RabbitMQ

/// Recovery in the protocol core, step by step with a fake clock: what a loss keeps and
/// fails, the back-off, the restore plan's requests one at a time, retries, and losses in
/// the middle of it all.
@Suite("Protocol core: recovery")
struct RecoveryProtocolTests {
    /// Expects the plan's next request to be `expected` and answers it.
    static func answer(_ h: inout MachineHarness, _ expected: Sent, with reply: InboundMethod, sourceLocation: SourceLocation = #_sourceLocation) {
        let sends = h.take().sends
        #expect(sends == [expected], sourceLocation: sourceLocation)
        h.machine.channelMethod(expected.channel, reply, now: h.now)
    }

    static let reset = RabbitMQError(code: .socketError, scope: .connection, message: "reset by peer")

    /// Connected again: channel 1 (the consumer's) reopened, the plan's channel 2 opened, and
    /// the consumer's queue found; the consume is next.
    static func reconnectUpToTheConsume(_ h: inout MachineHarness, queue: String, sourceLocation: SourceLocation = #_sourceLocation) {
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        answer(&h, .init(1, .channelOpen), with: .channelOpenOk, sourceLocation: sourceLocation)
        answer(&h, .init(2, .channelOpen), with: .channelOpenOk, sourceLocation: sourceLocation)
        answer(
            &h, .init(2, .request(.queueDeclare(name: queue, passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]))),
            with: .queueDeclareOk(.init(name: queue, messageCount: 0, consumerCount: 0)), sourceLocation: sourceLocation)
    }

    @Test func theWholePlanRunsInTheJavaClientsOrder() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.request(.basicQos(prefetchCount: 7, global: false), on: shared, reply: .basicQosOk)
        _ = h.request(.basicQos(prefetchCount: 42, global: true), on: shared, reply: .basicQosOk)
        _ = h.request(.confirmSelect, on: shared, reply: .confirmSelectOk)
        let exchange = ChannelRequest.exchangeDeclare(name: "x", type: "fanout", passive: false, durable: false, autoDelete: false, internal: false, arguments: [:])
        _ = h.request(exchange, on: shared, reply: .exchangeDeclareOk)
        let queue = ChannelRequest.queueDeclare(name: "", passive: false, durable: false, exclusive: true, autoDelete: false, arguments: [:])
        _ = h.request(queue, on: shared, reply: .queueDeclareOk(.init(name: "amq.gen-old", messageCount: 0, consumerCount: 0)))
        _ = h.request(.queueBind(queue: "amq.gen-old", exchange: "x", routingKey: "", arguments: [:]), on: shared, reply: .queueBindOk)
        let sink = h.consume("amq.gen-old", tag: "c1", on: shared)
        let channel = h.machine.channel(1)!
        let tickets = [ConfirmTicket(), ConfirmTicket()]
        for (index, ticket) in tickets.enumerated() {
            _ = h.machine.recordPublish(on: channel, message("m\(index)"), ticket: ticket, holdsSlot: true)
        }

        h.machine.connectionLost(Self.reset, now: h.now)
        var actions = h.take()
        #expect(actions.contains { if case .closeSocket = $0 { true } else { false } })
        #expect(actions.events.first == .disconnected(Self.reset))
        #expect(actions.phases == [.recovering])
        #expect(actions.contains { if case .dropStaleDeliveries(let s, 2) = $0 { s.buffer === sink.buffer } else { false } })
        #expect(actions.resolvedTickets.isEmpty, "unconfirmed publishes wait to be published again")
        #expect(h.machine.epoch == 2)
        // Back-off: 1 s (no jitter here), then attempt 1.
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(1)))
        h.advance(.milliseconds(999))
        #expect(h.take().connects.isEmpty)
        h.advance(.milliseconds(1))
        actions = h.take()
        #expect(actions.connects == [1])
        #expect(actions.events == [.recoveryAttempt(1)])

        h.machine.connected(heartbeat: .seconds(10), endpoint: "amqp://b:5672", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(1, .request(.basicQos(prefetchCount: 7, global: false))), with: .basicQosOk)
        Self.answer(&h, .init(1, .request(.basicQos(prefetchCount: 42, global: true))), with: .basicQosOk)
        Self.answer(&h, .init(1, .request(.confirmSelect)), with: .confirmSelectOk)
        Self.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(2, .request(exchange)), with: .exchangeDeclareOk)
        Self.answer(&h, .init(2, .request(queue)), with: .queueDeclareOk(.init(name: "amq.gen-new", messageCount: 0, consumerCount: 0)))
        // The binding and the consumer follow the new name.
        Self.answer(&h, .init(2, .request(.queueBind(queue: "amq.gen-new", exchange: "x", routingKey: "", arguments: [:]))), with: .queueBindOk)
        Self.answer(
            &h, .init(2, .request(.queueDeclare(name: "amq.gen-new", passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]))),
            with: .queueDeclareOk(.init(name: "amq.gen-new", messageCount: 0, consumerCount: 0)))
        let consume = ConsumeRequest(queue: "amq.gen-new", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:])
        Self.answer(&h, .init(1, .basicConsume(consume)), with: .basicConsumeOk(consumerTag: "c1"))
        actions = h.take()
        #expect(actions.sends == [.init(2, .channelClose(replyCode: 200, replyText: "Goodbye"))])
        #expect(actions.publishes.map { String(decoding: $0.1.body, as: UTF8.self) } == ["m0", "m1"])
        #expect(actions.publishes.allSatisfy { !$0.3 }, "republished messages hold no room in the publish buffer")
        #expect(tickets.allSatisfy { $0.wasRepublished })
        #expect(actions.events.last == .recovered(endpoint: "amqp://b:5672"))
        #expect(actions.phases == [.open])
        #expect(h.machine.stateName == "open")
        #expect(h.log.events.contains(.queueRenamed(from: "amq.gen-old", to: "amq.gen-new")))
        // The plan's own channel closes behind it.
        h.machine.channelMethod(2, .channelCloseOk, now: h.now)
        #expect(h.take().releasedNumbers == [2])
        _ = h.machine.confirm(channel, tag: 2, multiple: true, acked: true, now: h.now) { $0.resolve(.success($1)) }
        #expect(tickets.allSatisfy { outcome($0) == .acked })
        h.checkEveryWaiterAnsweredOnce()
    }

    /// Defect: a drop in the middle of the republish lost the messages not yet republished.
    @Test func aDropDuringTheRepublishKeepsEveryMessageInOrder() {
        var h = MachineHarness()
        h.connect()
        let shared = PublishingProtocolTests.confirming(&h)
        let channel = h.machine.channel(shared.number)!
        let tickets = (0..<5).map { _ in ConfirmTicket() }
        for (index, ticket) in tickets.enumerated() {
            _ = h.machine.recordPublish(on: channel, message("m\(index)"), ticket: ticket, holdsSlot: true)
        }
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(1, .request(.confirmSelect)), with: .confirmSelectOk)
        #expect(h.take().publishes.count == 5)
        // The new connection acks the first two, then drops before the rest is confirmed.
        _ = h.machine.confirm(channel, tag: 2, multiple: true, acked: true, now: h.now) { $0.resolve(.success($1)) }
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(1, .request(.confirmSelect)), with: .confirmSelectOk)
        let actions = h.take()
        #expect(actions.publishes.map { String(decoding: $0.1.body, as: UTF8.self) } == ["m2", "m3", "m4"])
        #expect(actions.resolvedTickets.isEmpty, "no confirmation failed")
        let slots = h.machine.confirm(channel, tag: 3, multiple: true, acked: true, now: h.now) { $0.resolve(.success($1)) }
        #expect(slots == 3, "every slot comes back: the window is whole again")
        #expect(tickets.allSatisfy { outcome($0) == .acked })
        #expect(channel.unconfirmed.isEmpty)
    }

    /// Defect: a consume or a cancel in flight at the drop came back with nobody owning it.
    @Test func aConsumeOrCancelInFlightAtTheDropFailsAndIsNotRecovered() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.consume("q", tag: "cancelled", on: shared)
        let consumeSink = ConsumerSink(buffer: DeliveryBuffer(), noAck: false, handler: nil)
        let consume = h.waiter()
        h.machine.consume(shared, ConsumeRequest(queue: "q", consumerTag: "new", noAck: false, exclusive: false, arguments: [:]), sink: consumeSink, waiter: .probe(consume), now: h.now)
        let cancel = h.waiter()
        h.machine.cancelConsumer(shared, consumerTag: "cancelled", waiter: .probe(cancel), now: h.now)
        h.take()
        h.machine.connectionLost(Self.reset, now: h.now)
        let actions = h.take()
        #expect(actions.failed[consume]?.isRetriable == true)
        #expect(actions.failed[cancel] != nil, "the cancel's caller learns the connection was lost")
        #expect(actions.finishedConsumers.count == 2)
        #expect(h.machine.channel(1)?.consumers.isEmpty == true, "neither comes back")
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func aRecoveryConsumeInFlightAtADropIsTriedAgain() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let sink = h.consume("q", tag: "c1", on: shared)
        h.loseAndReachConnect(Self.reset)
        Self.reconnectUpToTheConsume(&h, queue: "q")
        #expect(h.take().sends.first?.method == .basicConsume(ConsumeRequest(queue: "q", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:])))
        h.loseAndReachConnect(Self.reset)
        #expect(!h.log.finishedConsumers.contains { $0.0.buffer === sink.buffer }, "the consumer is still owned")
        #expect(h.machine.channel(1)?.consumers["c1"] != nil)
    }

    /// A stream consumer is registered again after the last delivery its iterator handed
    /// out; one that handed out nothing, from the offset it was created with.
    @Test func aStreamConsumerIsRecoveredAfterTheLastDeliveryHandedOut() {
        for handedOut in [nil, UInt64(41)] {
            var h = MachineHarness()
            h.connect()
            let shared = h.openChannel()
            let buffer = DeliveryBuffer(tracksStreamOffset: true)
            let request = ConsumeRequest(
                queue: "s", consumerTag: "c1", noAck: false, exclusive: false,
                arguments: ["x-stream-offset": "first", "x-priority": 1])
            let waiter = h.waiter()
            h.machine.consume(shared, request, sink: ConsumerSink(buffer: buffer, noAck: false, handler: nil), waiter: .probe(waiter), now: h.now)
            h.machine.channelMethod(1, .basicConsumeOk(consumerTag: "c1"), now: h.now)
            h.take()
            if let handedOut {
                buffer.handedOut(
                    RabbitMQDelivery(
                        body: [], properties: RabbitMQProperties(headers: ["x-stream-offset": .int64(Int64(handedOut))]),
                        exchange: "", routingKey: "s", redelivered: false, deliveryTag: 1, consumerTag: "c1",
                        messageCount: nil, channel: nil, epoch: h.machine.epoch))
            }
            h.loseAndReachConnect(Self.reset)
            Self.reconnectUpToTheConsume(&h, queue: "s")
            var expected = request
            if let handedOut { expected.arguments["x-stream-offset"] = .int64(Int64(handedOut) + 1) }
            #expect(h.take().sends.first?.method == .basicConsume(expected))
        }
    }

    @Test func anExclusiveQueueLockedByTheDeadConnectionIsRetriedUntilTheBrokerLetsGo() {
        var h = MachineHarness()
        h.connect(heartbeat: .seconds(2))
        let shared = h.openChannel()
        let queue = ChannelRequest.queueDeclare(name: "mine", passive: false, durable: false, exclusive: true, autoDelete: false, arguments: [:])
        _ = h.request(queue, on: shared, reply: .queueDeclareOk(.init(name: "mine", messageCount: 0, consumerCount: 0)))
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .seconds(2), endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
        let locked = ServerClose(replyCode: 405, replyText: "RESOURCE_LOCKED", classID: 50, methodID: 10)
        Self.answer(&h, .init(2, .request(queue)), with: .channelClose(locked))
        #expect(h.take().sends == [.init(2, .channelCloseOk)])
        // Paused for a second before trying again on a new channel.
        #expect(h.machine.nextDeadline! <= h.now.advanced(by: .seconds(1)))
        h.advance(.seconds(1))
        Self.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(2, .request(queue)), with: .queueDeclareOk(.init(name: "mine", messageCount: 0, consumerCount: 0)))
        let actions = h.take()
        #expect(actions.events.last == .recovered(endpoint: "e"))
        #expect(!h.log.events.contains { if case .topologyRecoveryFailed = $0 { true } else { false } })
    }

    @Test func aConsumersQueueIsWaitedForThenTheConsumeGoesAhead() {
        var h = MachineHarness()
        h.connect(heartbeat: .seconds(2))
        let shared = h.openChannel()
        _ = h.consume("owned-elsewhere", tag: "c1", on: shared)
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .seconds(2), endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        let probe = Sent(2, .request(.queueDeclare(name: "owned-elsewhere", passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:])))
        let missing = ServerClose(replyCode: 404, replyText: "NOT_FOUND", classID: 50, methodID: 10)
        var probes = 0
        Self.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
        // 404 every time: probed every 250 ms for 10 s (at least twice the heartbeat), then consumed anyway.
        var sends = h.take().sends
        while sends == [probe] {
            probes += 1
            h.machine.channelMethod(2, .channelClose(missing), now: h.now)
            let afterClose = h.take().sends
            if afterClose == [.init(2, .channelCloseOk)] {
                // Paused: the next probe comes a quarter of a second later, on a new channel.
                h.advance(.milliseconds(250))
                Self.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
            } else {
                // The wait is over: on with a channel of its own for what follows.
                #expect(afterClose == [.init(2, .channelCloseOk), .init(2, .channelOpen)])
                h.machine.channelMethod(2, .channelOpenOk, now: h.now)
            }
            sends = h.take().sends
        }
        #expect(sends.first?.method == .basicConsume(ConsumeRequest(queue: "owned-elsewhere", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:])))
        #expect((38...42).contains(probes), "\(probes) probes")
    }

    @Test func aRefusedLoginEndsRecoveryAtOnce() {
        var h = MachineHarness()
        h.connect()
        h.loseAndReachConnect(Self.reset)
        let refused = RabbitMQError(code: .authenticationFailed, scope: .connection, message: "login refused")
        h.machine.connectFailed(refused, now: h.now)
        let actions = h.take()
        #expect(actions.events.contains(.recoveryFailed(refused)))
        #expect(actions.terminated == .some(refused))
    }

    @Test func attemptsAreCountedAndBackOffGrowsUntilTheLimit() {
        var h = MachineHarness(settings: MachineHarness.settings { $0.maxAttempts = 3 })
        h.connect()
        h.machine.connectionLost(Self.reset, now: h.now)
        h.take()
        var delays: [Duration] = []
        for attempt in 1...3 {
            let start = h.now
            let until = h.machine.nextDeadline!
            delays.append(start.duration(to: until))
            h.now = until
            h.machine.tick(now: h.now)
            #expect(h.take().connects == [attempt])
            h.machine.connectFailed(RabbitMQError(code: .connectFailed, scope: .connection, message: "refused"), now: h.now)
            h.take()
        }
        #expect(delays == [.seconds(1), .seconds(2), .seconds(4)])
        h.now = h.machine.nextDeadline!
        h.machine.tick(now: h.now)
        let actions = h.take()
        #expect(actions.connects.isEmpty)
        #expect(actions.terminated??.message.contains("gave up after 3 attempts") == true)
    }

    @Test func closingWhileBackingOffEndsAtOnceAndFailsHeldPublishes() {
        var h = MachineHarness()
        h.connect()
        let shared = PublishingProtocolTests.confirming(&h)
        h.machine.connectionLost(Self.reset, now: h.now)
        h.take()
        let ticket = ConfirmTicket()
        guard case .hold = h.machine.routePublish(shared) else {
            Issue.record("not held while recovering")
            return
        }
        h.machine.hold(shared, message(), ticket: ticket, holdsSlot: true)
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        let actions = h.take()
        #expect(actions.terminated == .some(nil))
        #expect(actions.succeeded.contains(close))
        #expect(actions.releasedRoom == 1 && actions.releasedSlots == 1)
        #expect(actions.resolvedTickets.count == 1)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func closingWhileRestoringSendsTheCloseAndFailsWhatWasNotRepublished() {
        var h = MachineHarness()
        h.connect()
        let shared = PublishingProtocolTests.confirming(&h)
        let ticket = ConfirmTicket()
        _ = h.machine.recordPublish(on: h.machine.channel(shared.number)!, message(), ticket: ticket, holdsSlot: true)
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        h.take()
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        var actions = h.take()
        #expect(actions.sends == [.init(0, .connectionClose(replyCode: 200, replyText: "Normal shutdown"))])
        #expect(actions.resolvedTickets.count == 1 && actions.releasedSlots == 1)
        h.machine.connectionMethod(.connectionCloseOk, now: h.now)
        actions = h.take()
        #expect(actions.succeeded.contains(close))
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func closingAChannelDuringRecoveryNeverLeavesItOpenOnTheBroker() {
        var h = MachineHarness()
        h.connect()
        let dormant = h.openChannel()
        let reopening = h.openChannel()
        h.loseAndReachConnect(Self.reset)
        let first = h.waiter()
        h.machine.closeChannel(dormant, waiter: .probe(first), now: h.now)
        var actions = h.take()
        #expect(actions.succeeded == [first] && actions.releasedNumbers == [1], "nothing on the broker to close")
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        #expect(h.take().sends == [.init(2, .channelOpen)])
        let second = h.waiter()
        h.machine.closeChannel(reopening, waiter: .probe(second), now: h.now)
        #expect(h.take().isEmpty == false)
        // Its open is on the wire: it is closed once open, before its number is freed.
        h.machine.channelMethod(2, .channelOpenOk, now: h.now)
        actions = h.take()
        #expect(actions.sends.first == .init(2, .channelClose(replyCode: 200, replyText: "Goodbye")))
        h.machine.channelMethod(2, .channelCloseOk, now: h.now)
        actions = h.take()
        #expect(actions.succeeded.contains(second) && actions.releasedNumbers.contains(2))
        h.checkEveryWaiterAnsweredOnce()
    }

    /// Defect: recovery without a channel number for itself reconnected for ever.
    @Test func recoveryWithoutAFreeChannelNumberFailsWithAClearError() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.request(.exchangeDeclare(name: "x", type: "direct", passive: false, durable: true, autoDelete: false, internal: false, arguments: [:]), on: shared, reply: .exchangeDeclareOk)
        h.loseAndReachConnect(Self.reset)
        h.exhaustChannelNumbers()
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        let actions = h.take()
        guard case .recoveryFailed(let error)? = actions.events.first(where: { if case .recoveryFailed = $0 { true } else { false } }) else {
            Issue.record("recovery did not fail: \(actions)")
            return
        }
        #expect(error.code == .resourceError && error.message.contains("channel"))
        #expect(h.machine.isClosed)
    }

    @Test func commandsDuringRecoveryFailFastExceptPublishesThatWait() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        h.machine.connectionLost(Self.reset, now: h.now)
        h.take()
        let open = h.waiter()
        let request = h.waiter()
        let consume = h.waiter()
        h.machine.openChannel(ChannelShared(number: 5, core: h.core), waiter: .probe(open), now: h.now)
        h.machine.request(shared, .queuePurge(name: "q"), waiter: .probe(request), now: h.now)
        h.machine.consume(shared, ConsumeRequest(queue: "q", consumerTag: "c", noAck: false, exclusive: false, arguments: [:]), sink: ConsumerSink(buffer: DeliveryBuffer(), noAck: false, handler: nil), waiter: .probe(consume), now: h.now)
        let actions = h.take()
        #expect(Set(actions.failed.keys) == [open, request, consume])
        #expect(actions.failed.values.allSatisfy { $0.isRetriable })
        #expect(actions.releasedNumbers == [5])
        guard case .hold = h.machine.routePublish(shared) else {
            Issue.record("a publish during recovery was not held")
            return
        }
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func heldPublishesFollowTheRepublishedOnesAfterRecovery() {
        var h = MachineHarness()
        h.connect()
        let shared = PublishingProtocolTests.confirming(&h)
        _ = h.machine.recordPublish(on: h.machine.channel(shared.number)!, message("unconfirmed"), ticket: nil, holdsSlot: true)
        h.loseAndReachConnect(Self.reset)
        h.machine.hold(shared, message("during the outage"), ticket: nil, holdsSlot: true)
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(1, .request(.confirmSelect)), with: .confirmSelectOk)
        let actions = h.take()
        #expect(actions.publishes.map { String(decoding: $0.1.body, as: UTF8.self) } == ["unconfirmed", "during the outage"])
        #expect(actions.publishes.map(\.3) == [false, true])
    }

    /// Defect: a publish with a deadline (an RPC request) that the I/O thread held during an
    /// outage was sent once the connection was back, long after its caller had timed out.
    @Test func aHeldPublishWhoseDeadlinePassedIsNeverSent() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        h.loseAndReachConnect(Self.reset)
        h.machine.hold(shared, message("late"), ticket: nil, holdsSlot: false, deadline: h.now + .seconds(1))
        h.machine.hold(shared, message("in time"), ticket: nil, holdsSlot: false, deadline: h.now + .seconds(60))
        h.machine.hold(shared, message("no deadline"), ticket: nil, holdsSlot: false)
        h.take()
        h.advance(.seconds(2))
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        let actions = h.take()
        #expect(actions.publishes.map { String(decoding: $0.1.body, as: UTF8.self) } == ["in time", "no deadline"])
        #expect(actions.releasedRoom == 1, "the dropped publish gives its room back")
    }

    /// Defect: the `disconnected` event went out before the connection said it was
    /// recovering, so a publisher reacting to the event could be sent down the open path.
    @Test func theConnectionSaysItIsRecoveringBeforeItTellsAnyoneItWasLost() {
        var h = MachineHarness()
        h.connect()
        h.machine.connectionLost(Self.reset, now: h.now)
        let actions = h.take()
        let phase = actions.firstIndex { if case .setPhase(.recovering) = $0 { true } else { false } }
        let event = actions.firstIndex { if case .emit(.disconnected) = $0 { true } else { false } }
        #expect(phase != nil && event != nil && phase! < event!, "\(actions)")
    }

    @Test func settlementsOfTheNewConnectionGoOutAsSoonAsTheirChannelIsBack() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let oldEpoch = h.machine.epoch
        h.loseAndReachConnect(Self.reset)
        #expect(h.machine.settle(shared, epoch: h.machine.epoch) == nil, "the channel is not open yet")
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        #expect(h.machine.settle(shared, epoch: h.machine.epoch) == 1)
        #expect(h.machine.settle(shared, epoch: oldEpoch) == nil)
    }

    /// Defect: a command whose send failed was dropped and its caller never answered.
    @Test func everyCommandInFlightWhenItsSendFailsIsAnswered() {
        var h = MachineHarness(settings: MachineHarness.settings { $0.isEnabled = false })
        h.connect()
        let shared = h.openChannel()
        let consumer = h.consume("q", tag: "c0", on: shared)
        let open = h.waiter()
        let request = h.waiter()
        let consume = h.waiter()
        let cancel = h.waiter()
        let close = h.waiter()
        h.machine.openChannel(ChannelShared(number: 2, core: h.core), waiter: .probe(open), now: h.now)
        h.machine.request(shared, .queuePurge(name: "q"), waiter: .probe(request), now: h.now)
        h.machine.consume(shared, ConsumeRequest(queue: "q", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:]), sink: ConsumerSink(buffer: DeliveryBuffer(), noAck: false, handler: nil), waiter: .probe(consume), now: h.now)
        h.machine.cancelConsumer(shared, consumerTag: "c0", waiter: .probe(cancel), now: h.now)
        h.machine.close(waiter: .probe(close), now: h.now)
        h.take()
        // The loop reports the send that failed (EPIPE after a reset) as the connection lost.
        h.machine.connectionLost(Self.reset, now: h.now)
        let actions = h.take()
        #expect(actions.terminated != nil)
        #expect(actions.finishedConsumers.contains { $0.0.buffer === consumer.buffer })
        h.checkEveryWaiterAnsweredOnce()
        _ = (open, request, consume, cancel, close)
    }

    @Test func aRecoveryRequestThatTimesOutLosesTheConnectionAgain() {
        var h = MachineHarness(settings: MachineHarness.settings(requestTimeout: .seconds(5)))
        h.connect(heartbeat: .zero)
        _ = h.openChannel()
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        #expect(h.take().sends == [.init(1, .channelOpen)])
        h.advance(.seconds(5))
        let actions = h.take()
        #expect(actions.contains { if case .closeSocket = $0 { true } else { false } })
        #expect(h.machine.stateName == "backingOff")
        h.now = h.machine.nextDeadline!
        h.machine.tick(now: h.now)
        #expect(h.take().connects == [2], "the attempts go on counting")
    }

    @Test func aFilteredOutConsumerEndsWithATypedErrorInsteadOfComingBack() {
        var h = MachineHarness(settings: MachineHarness.settings { $0.topologyFilter.consumers = { tag, _ in tag != "skip" } })
        h.connect()
        let shared = h.openChannel()
        let skipped = h.consume("q", tag: "skip", on: shared)
        h.loseAndReachConnect(Self.reset)
        Self.reconnectUpToTheConsume(&h, queue: "q")
        let actions = h.take()
        #expect(actions.finishedConsumers.first?.0.buffer === skipped.buffer)
        #expect(actions.finishedConsumers.first?.1?.code == .consumerCancelled)
        #expect(actions.events.last == .recovered(endpoint: "e"))
    }

    @Test func aBrokerRefusingAnEntityIsReportedAndTheRestGoesOn() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let bad = ChannelRequest.exchangeDeclare(name: "bad", type: "x-unknown", passive: false, durable: false, autoDelete: false, internal: false, arguments: [:])
        let good = ChannelRequest.exchangeDeclare(name: "good", type: "direct", passive: false, durable: false, autoDelete: false, internal: false, arguments: [:])
        _ = h.request(bad, on: shared, reply: .exchangeDeclareOk)
        _ = h.request(good, on: shared, reply: .exchangeDeclareOk)
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
        Self.answer(&h, .init(2, .request(bad)), with: .channelClose(ServerClose(replyCode: 503, replyText: "COMMAND_INVALID", classID: 40, methodID: 10)))
        // Reported, and the plan goes on at once on a new channel of its own.
        #expect(h.take().sends == [.init(2, .channelCloseOk), .init(2, .channelOpen)])
        #expect(h.log.events.contains { if case .topologyRecoveryFailed("exchange bad", _) = $0 { true } else { false } })
        h.machine.channelMethod(2, .channelOpenOk, now: h.now)
        Self.answer(&h, .init(2, .request(good)), with: .exchangeDeclareOk)
        #expect(h.take().events.last == .recovered(endpoint: "e"))
    }

    /// Defect: the application closing a channel while the plan waited for a reply on it
    /// (its prefetch, confirm mode or a consumer being restored) took the plan's request
    /// with the channel's, and recovery waited for that reply for ever.
    @Test(arguments: [RestoredOnTheChannel.prefetch, .confirmMode, .consumer])
    func closingAChannelWhoseRestoreIsInFlightLetsRecoveryFinish(_ restored: RestoredOnTheChannel) {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let expected: Sent
        let reply: InboundMethod
        var sink: ConsumerSink?
        switch restored {
        case .prefetch:
            _ = h.request(.basicQos(prefetchCount: 10, global: false), on: shared, reply: .basicQosOk)
            expected = .init(1, .request(.basicQos(prefetchCount: 10, global: false)))
            reply = .basicQosOk
        case .confirmMode:
            _ = h.request(.confirmSelect, on: shared, reply: .confirmSelectOk)
            expected = .init(1, .request(.confirmSelect))
            reply = .confirmSelectOk
        case .consumer:
            let queue = ChannelRequest.queueDeclare(name: "q", passive: false, durable: false, exclusive: false, autoDelete: true, arguments: [:])
            _ = h.request(queue, on: shared, reply: .queueDeclareOk(.init(name: "q", messageCount: 0, consumerCount: 0)))
            sink = h.consume("q", tag: "c1", on: shared)
            let consume = ConsumeRequest(queue: "q", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:])
            expected = .init(1, .basicConsume(consume))
            reply = .basicConsumeOk(consumerTag: "c1")
        }
        h.loseAndReachConnect(Self.reset)
        if case .consumer = restored {
            // The consumer's queue is declared again and looked for first, on the plan's own channel.
            h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
            Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
            Self.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
            Self.answer(
                &h, .init(2, .request(.queueDeclare(name: "q", passive: false, durable: false, exclusive: false, autoDelete: true, arguments: [:]))),
                with: .queueDeclareOk(.init(name: "q", messageCount: 0, consumerCount: 0)))
            Self.answer(
                &h, .init(2, .request(.queueDeclare(name: "q", passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]))),
                with: .queueDeclareOk(.init(name: "q", messageCount: 0, consumerCount: 0)))
        } else {
            h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
            Self.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        }
        #expect(h.take().sends == [expected])
        let close = h.waiter()
        h.machine.closeChannel(shared, waiter: .probe(close), now: h.now)
        #expect(h.take().sends.contains(.init(1, .channelClose(replyCode: 200, replyText: "Goodbye"))))
        // The broker answers the restore, then the close.
        h.machine.channelMethod(1, reply, now: h.now)
        h.machine.channelMethod(1, .channelCloseOk, now: h.now)
        var actions = h.take()
        // Whatever the plan still has to do (its own channel) is answered too.
        for sent in actions.sends where sent.method == .channelClose(replyCode: 200, replyText: "Goodbye") && sent.channel != 1 {
            h.machine.channelMethod(sent.channel, .channelCloseOk, now: h.now)
        }
        actions += h.take()
        #expect(h.log.events.contains(.recovered(endpoint: "e")), "recovery finished")
        #expect(h.machine.stateName == "open")
        #expect(actions.succeeded.contains(close))
        #expect(!h.log.events.contains { if case .topologyRecoveryFailed = $0 { true } else { false } }, "closing is not a failure to restore")
        if let sink {
            // Like every consumer of a channel closed by its application: it ends normally,
            // and its auto-delete queue (the broker deletes it) is forgotten.
            let finished = h.log.finishedConsumers.filter { $0.0.buffer === sink.buffer }
            #expect(finished.count == 1 && finished.first?.1 == nil, "\(finished)")
            #expect(h.machine.registry.queue(named: "q") == nil)
        }
        h.checkEveryWaiterAnsweredOnce()
    }

    enum RestoredOnTheChannel: CaseIterable, Sendable { case prefetch, confirmMode, consumer }

    /// Defect: closing while the plan restored the topology waited the whole close timeout
    /// when publishes were held (nothing released or failed them, so the connection never
    /// counted as drained).
    @Test func closingWhileRestoringWithHeldPublishesClosesAtOnce() {
        var h = MachineHarness()
        h.connect()
        let shared = PublishingProtocolTests.confirming(&h)
        h.loseAndReachConnect(Self.reset)
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        h.take()
        let ticket = ConfirmTicket()
        guard case .hold = h.machine.routePublish(shared) else {
            Issue.record("not held while restoring")
            return
        }
        h.machine.hold(shared, message(), ticket: ticket, holdsSlot: true)
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        let actions = h.take()
        #expect(actions.sends == [.init(0, .connectionClose(replyCode: 200, replyText: "Normal shutdown"))], "sent at once, not after the close timeout")
        #expect(actions.resolvedTickets.count == 1 && actions.releasedSlots == 1 && actions.releasedRoom == 1)
        h.machine.connectionMethod(.connectionCloseOk, now: h.now)
        #expect(h.take().succeeded.contains(close))
        h.checkEveryWaiterAnsweredOnce()
    }
}

extension MachineHarness {
    /// Every channel number is taken from now on (the recovery plan gets none).
    func exhaustChannelNumbers() {
        numbersForTests.exhausted = true
    }
}
