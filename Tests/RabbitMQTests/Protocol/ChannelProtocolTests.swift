import Testing

@testable import RabbitMQ

/// Channels in the protocol core, without a broker: opening, requests and their replies,
/// the close handshake, content, consumers.
@Suite("Protocol core: channels")
struct ChannelProtocolTests {
    @Test func openingAChannelSendsOpenAndAnswersOnOpenOk() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        #expect(h.machine.channel(shared.number)?.phase == .open)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func repliesAreMatchedInOrderAndRecordedInTheTopology() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let declare = ChannelRequest.queueDeclare(name: "q", passive: false, durable: true, exclusive: false, autoDelete: false, arguments: [:])
        let bind = ChannelRequest.queueBind(queue: "q", exchange: "x", routingKey: "k", arguments: [:])
        let first = h.waiter()
        let second = h.waiter()
        h.machine.request(shared, declare, waiter: .probe(first), now: h.now)
        h.machine.request(shared, bind, waiter: .probe(second), now: h.now)
        #expect(h.take().sends == [.init(1, .request(declare)), .init(1, .request(bind))])
        let result = RabbitMQQueueDeclareResult(name: "q", messageCount: 3, consumerCount: 0)
        h.machine.channelMethod(1, .queueDeclareOk(result), now: h.now)
        h.machine.channelMethod(1, .queueBindOk, now: h.now)
        let actions = h.take()
        #expect(actions.succeeded == [first, second])
        #expect(actions.reply(to: first) == .queueDeclared(result))
        #expect(h.machine.registry.queues.map(\.name) == ["q"])
        #expect(h.machine.registry.bindings.map(\.routingKey) == ["k"])
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func aConsumeOkTrailingALaterReplyIsMatchedByItsTag() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let sink = ConsumerSink(buffer: DeliveryBuffer(), noAck: false, handler: nil)
        let consume = h.waiter()
        let passive = h.waiter()
        h.machine.consume(shared, ConsumeRequest(queue: "q", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:]), sink: sink, waiter: .probe(consume), now: h.now)
        h.machine.request(shared, .queueDeclare(name: "q", passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]), waiter: .probe(passive), now: h.now)
        h.take()
        // The queue's process answers the consume after the channel answered the declare.
        h.machine.channelMethod(1, .queueDeclareOk(.init(name: "q", messageCount: 0, consumerCount: 1)), now: h.now)
        #expect(h.take().succeeded == [passive])
        h.machine.channelMethod(1, .basicConsumeOk(consumerTag: "c1"), now: h.now)
        #expect(h.take().reply(to: consume) == .consumerTag("c1"))
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func aReplyNobodyAskedForIsAProtocolErrorThatEndsTheConnection() {
        var h = MachineHarness(settings: MachineHarness.settings { $0.isEnabled = false })
        h.connect()
        _ = h.openChannel()
        h.machine.channelMethod(1, .queueBindOk, now: h.now)
        let actions = h.take()
        #expect(actions.terminated??.code == .protocolError)
        #expect(h.machine.isClosed)
    }

    @Test func theApplicationsCloseFailsWhatWaitsAndEndsConsumersNormallyAtCloseOk() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let sink = h.consume("q", tag: "c1", on: shared)
        let pending = h.waiter()
        h.machine.request(shared, .queuePurge(name: "q"), waiter: .probe(pending), now: h.now)
        h.take()
        let close = h.waiter()
        h.machine.closeChannel(shared, waiter: .probe(close), now: h.now)
        var actions = h.take()
        #expect(actions.sends == [.init(1, .channelClose(replyCode: 200, replyText: "Goodbye"))])
        #expect(actions.failed[pending]?.code == .closed)
        #expect(actions.contains { if case .markChannelClosed = $0 { true } else { false } })
        #expect(actions.finishedConsumers.isEmpty, "consumers end at close-ok")
        h.machine.channelMethod(1, .channelCloseOk, now: h.now)
        actions = h.take()
        #expect(actions.succeeded == [close])
        #expect(actions.finishedConsumers.count == 1 && actions.finishedConsumers[0].0.buffer === sink.buffer)
        #expect(actions.finishedConsumers[0].1 == nil, "a close the application asked for ends its consumers normally")
        #expect(actions.releasedNumbers == [1])
        #expect(h.machine.channel(1) == nil)
        h.checkEveryWaiterAnsweredOnce()
    }

    /// Defect: content that arrived after our channel.close failed the whole connection.
    @Test(arguments: ["deliver", "return", "get"])
    func contentArrivingWhileTheChannelClosesIsSkippedNotAProtocolError(kind: String) {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        h.machine.closeChannel(shared, waiter: .probe(h.waiter()), now: h.now)
        h.take()
        let channel = h.machine.channel(1)!
        let delivery = RabbitMQDelivery(
            body: [], properties: RabbitMQProperties(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: 7,
            consumerTag: "c1", messageCount: nil, channel: nil, epoch: h.machine.epoch)
        let contentKind: ContentAssembly.Kind =
            switch kind {
            case "deliver": .deliver
            case "return": .returned(replyCode: 312, replyText: "NO_ROUTE")
            default: .get
            }
        #expect(channel.beginContent(contentKind, delivery) == nil)
        let outcome = h.complete("a body of several bytes", on: channel, properties: RabbitMQProperties(appID: "x"))
        #expect(outcome?.isNone == true)
        #expect(h.take().isEmpty, "nothing is delivered, returned, answered or failed")
        h.machine.channelMethod(1, .channelCloseOk, now: h.now)
        h.take()
        #expect(!h.machine.isClosed && h.machine.stateName == "open")
        h.checkEveryWaiterAnsweredOnce()
    }

    /// Defect: a content header announcing a body of 2^63 bytes or more trapped converting
    /// it, and one of a few exabytes made the delivery reserve that much and crash: a
    /// hostile broker could end the process with one frame.
    @Test func aBodyLargerThanRabbitMQEverSendsIsAProtocolError() {
        for size in [UInt64.max, UInt64(Int.max), UInt64(ContentAssembly.maxBodySize) + 1] {
            var h = MachineHarness()
            h.connect()
            let shared = h.openChannel()
            _ = h.consume("q", tag: "c1", on: shared)
            let channel = h.machine.channel(1)!
            let delivery = RabbitMQDelivery(
                body: [], properties: .init(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: 1, consumerTag: "c1",
                messageCount: nil, channel: nil, epoch: h.machine.epoch)
            _ = channel.beginContent(.deliver, delivery)
            guard case .protocolError = channel.contentHeader(bodySize: size, properties: nil) else {
                Issue.record("a body of \(size) bytes was accepted")
                return
            }
        }
        // The largest RabbitMQ allows is fine.
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        let channel = h.machine.channel(1)!
        _ = channel.beginContent(
            .discard,
            RabbitMQDelivery(
                body: [], properties: .init(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: 1, consumerTag: "c1",
                messageCount: nil, channel: nil, epoch: h.machine.epoch))
        guard case .incomplete = channel.contentHeader(bodySize: UInt64(ContentAssembly.maxBodySize), properties: nil) else {
            Issue.record("a body of RabbitMQ's largest size was refused")
            return
        }
    }

    @Test func aContentHeaderWithoutAMethodIsAProtocolError() {
        var h = MachineHarness()
        h.connect()
        _ = h.openChannel()
        let channel = h.machine.channel(1)!
        guard case .protocolError = channel.contentHeader(bodySize: 3, properties: nil) else {
            Issue.record("a header without its method was accepted")
            return
        }
        let body: [UInt8] = [1, 2, 3]
        guard case .protocolError = body.withUnsafeBytes({ channel.contentBody($0) }) else {
            Issue.record("a body without its header was accepted")
            return
        }
    }

    @Test func theBrokerClosingAChannelFailsEverythingOnItWithItsError() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let sink = h.consume("q", tag: "c1", on: shared)
        let request = h.waiter()
        h.machine.request(shared, .queueDeclare(name: "missing", passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]), waiter: .probe(request), now: h.now)
        h.take()
        h.machine.channelMethod(1, .channelClose(ServerClose(replyCode: 404, replyText: "NOT_FOUND - no queue", classID: 50, methodID: 10)), now: h.now)
        let actions = h.take()
        #expect(actions.sends == [.init(1, .channelCloseOk)])
        #expect(actions.failed[request]?.code == .notFound)
        #expect(actions.failed[request]?.scope == .channel)
        #expect(actions.finishedConsumers.first?.0.buffer === sink.buffer)
        #expect(actions.finishedConsumers.first?.1?.code == .notFound)
        #expect(h.machine.stateName == "open", "the connection goes on")
        h.checkEveryWaiterAnsweredOnce()
    }

    /// Defect: a consumer whose channel the library closed after a timeout ended silently.
    @Test func aRequestTimeoutClosesItsChannelAndItsConsumersEndWithTheTimeout() {
        var h = MachineHarness(settings: MachineHarness.settings(requestTimeout: .seconds(5)))
        h.connect(heartbeat: .zero)
        let shared = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        let request = h.waiter()
        h.machine.request(shared, .queuePurge(name: "q"), waiter: .probe(request), now: h.now)
        h.take()
        h.advance(.seconds(4))
        #expect(h.take().isEmpty)
        h.advance(.seconds(2))
        var actions = h.take()
        #expect(actions.failed[request]?.code == .timeout)
        #expect(actions.sends == [.init(1, .channelClose(replyCode: 200, replyText: "Goodbye"))])
        h.machine.channelMethod(1, .channelCloseOk, now: h.now)
        actions = h.take()
        #expect(actions.finishedConsumers.first?.1?.code == .timeout, "\(actions.finishedConsumers)")
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func noCloseOkBeforeTheDeadlineMeansTheConnectionIsUnusable() {
        var h = MachineHarness(settings: MachineHarness.settings(requestTimeout: .seconds(5)) { $0.isEnabled = false })
        h.connect(heartbeat: .zero)
        let shared = h.openChannel()
        let close = h.waiter()
        h.machine.closeChannel(shared, waiter: .probe(close), now: h.now)
        h.take()
        h.advance(.seconds(6))
        let actions = h.take()
        #expect(actions.terminated??.code == .timeout)
        #expect(actions.succeeded.contains(close))
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func aSecondConsumerWithTheSameTagIsRefusedWithoutSendingAnything() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        let sink = ConsumerSink(buffer: DeliveryBuffer(), noAck: false, handler: nil)
        let waiter = h.waiter()
        h.machine.consume(shared, ConsumeRequest(queue: "q", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:]), sink: sink, waiter: .probe(waiter), now: h.now)
        let actions = h.take()
        #expect(actions.sends.isEmpty)
        #expect(actions.failed[waiter]?.code == .invalidConfiguration)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func aCancelWhileRegisteringIsSentOnceConsumeOkArrives() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let sink = ConsumerSink(buffer: DeliveryBuffer(), noAck: false, handler: nil)
        let consume = h.waiter()
        let request = ConsumeRequest(queue: "q", consumerTag: "c1", noAck: false, exclusive: false, arguments: [:])
        h.machine.consume(shared, request, sink: sink, waiter: .probe(consume), now: h.now)
        h.take()
        let cancel = h.waiter()
        h.machine.cancelConsumer(shared, consumerTag: "c1", waiter: .probe(cancel), now: h.now)
        #expect(h.take().isEmpty, "nothing to cancel on the broker yet")
        h.machine.channelMethod(1, .basicConsumeOk(consumerTag: "c1"), now: h.now)
        var actions = h.take()
        #expect(actions.succeeded == [consume])
        #expect(actions.sends == [.init(1, .basicCancel(consumerTag: "c1"))])
        h.machine.channelMethod(1, .basicCancelOk(consumerTag: "c1"), now: h.now)
        actions = h.take()
        #expect(actions.succeeded == [cancel])
        #expect(actions.finishedConsumers.first?.1 == nil)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func theBrokerCancellingAConsumerEndsItWithATypedError() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let sink = h.consume("q", tag: "c1", on: shared)
        h.machine.channelMethod(1, .basicCancel(consumerTag: "c1"), now: h.now)
        let actions = h.take()
        #expect(actions.sends.isEmpty, "basic.cancel from the broker needs no answer")
        #expect(actions.finishedConsumers.first?.0.buffer === sink.buffer)
        #expect(actions.finishedConsumers.first?.1?.code == .consumerCancelled)
        #expect(h.machine.channel(1)?.consumers.isEmpty == true)
    }

    @Test func deliveriesGoToTheirConsumerSettleableUnlessAutoAck() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let manual = h.consume("q1", tag: "manual", on: shared)
        let auto = h.consume("q2", tag: "auto", on: shared, noAck: true)
        let first = h.deliver("one", tag: 1, consumerTag: "manual", on: 1, properties: RabbitMQProperties(messageID: "m-1"))
        guard case .deliver(let sink, let delivery)? = first else {
            Issue.record("not delivered: \(String(describing: first))")
            return
        }
        #expect(sink.buffer === manual.buffer)
        #expect(delivery.bodyString == "one" && delivery.properties.messageID == "m-1" && delivery.isSettleable)
        let second = h.deliver("two", tag: 2, consumerTag: "auto", on: 1)
        guard case .deliver(let autoSink, let autoDelivery)? = second else {
            Issue.record("not delivered")
            return
        }
        #expect(autoSink.buffer === auto.buffer && !autoDelivery.isSettleable)
        #expect(h.deliver("x", tag: 3, consumerTag: "unknown", on: 1)?.isNone == true)
    }

    @Test func aDeliveryNobodyIteratesAnyMoreIsGivenBack() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        let delivery = h.deliver("one", tag: 9, consumerTag: "c1", on: 1)?.delivery
        #expect(h.machine.refused(delivery!, channel: 1) == .basicReject(deliveryTag: 9, requeue: true))
        var autoAck = delivery!
        autoAck = RabbitMQDelivery(
            body: [], properties: .init(), exchange: "", routingKey: "", redelivered: false, deliveryTag: 10, consumerTag: "c1",
            messageCount: nil, channel: nil, epoch: 1)
        #expect(h.machine.refused(autoAck, channel: 1) == nil, "an auto-ack delivery needs no answer")
    }

    /// Defect: a header table nested too deep was decoded by recursion on the I/O thread.
    @Test func aMessageWhosePropertiesCannotBeDecodedIsRejectedWithoutRequeue() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        let channel = h.machine.channel(1)!
        let delivery = RabbitMQDelivery(
            body: [], properties: .init(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: 4, consumerTag: "c1",
            messageCount: nil, channel: nil, epoch: h.machine.epoch)
        _ = channel.beginContent(.deliver, delivery)
        guard case .complete = channel.contentHeader(bodySize: 0, properties: nil, undecodable: true) else {
            Issue.record("incomplete")
            return
        }
        #expect(h.machine.contentComplete(channel).isNone)
        #expect(h.take().sends == [.init(1, .basicReject(deliveryTag: 4, requeue: false))])
    }

    @Test func aGetAnswersItsCallerWithTheMessageOrNothing() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let empty = h.waiter()
        h.machine.request(shared, .basicGet(queue: "q", noAck: false), waiter: .probe(empty), now: h.now)
        h.take()
        h.machine.channelMethod(1, .basicGetEmpty, now: h.now)
        #expect(h.take().reply(to: empty) == .delivery(nil))
        let full = h.waiter()
        h.machine.request(shared, .basicGet(queue: "q", noAck: false), waiter: .probe(full), now: h.now)
        h.take()
        let channel = h.machine.channel(1)!
        _ = channel.beginContent(
            .get,
            RabbitMQDelivery(
                body: [], properties: .init(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: 1, consumerTag: "",
                messageCount: 4, channel: nil, epoch: 1))
        #expect(h.complete("got", on: channel)?.isNone == true)
        guard case .delivery(let delivery?)? = h.take().reply(to: full) else {
            Issue.record("no delivery")
            return
        }
        #expect(delivery.bodyString == "got" && delivery.isSettleable)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func settlementsGoOutOnlyForTheCurrentConnectionAndAnOpenChannel() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        #expect(h.machine.settle(shared, epoch: h.machine.epoch) == 1)
        #expect(h.machine.settle(shared, epoch: h.machine.epoch - 1) == nil, "a stale tag would close the channel with 406")
        let stranger = ChannelShared(number: 1, core: h.core)
        #expect(h.machine.settle(stranger, epoch: h.machine.epoch) == nil, "a reused number is another channel")
        h.machine.closeChannel(shared, waiter: .probe(h.waiter()), now: h.now)
        h.take()
        #expect(h.machine.settle(shared, epoch: h.machine.epoch) == nil, "the close requeues everything anyway")
    }
}
