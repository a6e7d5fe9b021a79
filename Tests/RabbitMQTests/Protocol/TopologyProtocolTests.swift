import Testing

@testable import RabbitMQ

/// What the topology registry keeps for recovery, and what it forgets because the broker
/// deleted it (defect: auto-delete queues and exchanges came back after recovery).
@Suite("Protocol core: topology")
struct TopologyProtocolTests {
    static func autoDeleteSetup(_ h: inout MachineHarness) -> ChannelShared {
        let shared = h.openChannel()
        _ = h.request(
            .exchangeDeclare(name: "x", type: "fanout", passive: false, durable: false, autoDelete: true, internal: false, arguments: [:]),
            on: shared, reply: .exchangeDeclareOk)
        _ = h.request(
            .queueDeclare(name: "q", passive: false, durable: false, exclusive: false, autoDelete: true, arguments: [:]),
            on: shared, reply: .queueDeclareOk(.init(name: "q", messageCount: 0, consumerCount: 0)))
        _ = h.request(.queueBind(queue: "q", exchange: "x", routingKey: "", arguments: [:]), on: shared, reply: .queueBindOk)
        return shared
    }

    @Test func anAutoDeleteQueueGoesWithItsLastConsumersChannelAndTakesItsExchange() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.autoDeleteSetup(&h)
        _ = h.consume("q", tag: "c1", on: shared)
        h.machine.closeChannel(shared, waiter: .probe(h.waiter()), now: h.now)
        h.take()
        #expect(h.machine.registry.queue(named: "q") != nil, "still there until close-ok")
        h.machine.channelMethod(shared.number, .channelCloseOk, now: h.now)
        h.take()
        #expect(h.machine.registry.queues.isEmpty)
        #expect(h.machine.registry.exchanges.isEmpty, "the auto-delete exchange lost its last binding")
        #expect(h.machine.registry.bindings.isEmpty)
    }

    @Test func aCancelOkArrivingWhileTheChannelClosesStillForgetsTheQueue() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.autoDeleteSetup(&h)
        let keep = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        h.machine.cancelConsumer(shared, consumerTag: "c1", waiter: .probe(h.waiter()), now: h.now)
        h.machine.closeChannel(shared, waiter: .probe(h.waiter()), now: h.now)
        #expect(h.take().sends == [.init(1, .basicCancel(consumerTag: "c1")), .init(1, .channelClose(replyCode: 200, replyText: "Goodbye"))])
        h.machine.channelMethod(shared.number, .basicCancelOk(consumerTag: "c1"), now: h.now)
        h.take()
        #expect(h.machine.registry.queues.isEmpty)
        h.machine.channelMethod(shared.number, .channelCloseOk, now: h.now)
        h.take()
        #expect(h.machine.channel(keep.number) != nil)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func anAutoDeleteQueueAnotherConsumerStillReadsIsKept() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.autoDeleteSetup(&h)
        let other = h.openChannel()
        _ = h.consume("q", tag: "c1", on: shared)
        _ = h.consume("q", tag: "c2", on: other)
        h.machine.cancelConsumer(shared, consumerTag: "c1", waiter: .probe(h.waiter()), now: h.now)
        h.take()
        h.machine.channelMethod(shared.number, .basicCancelOk(consumerTag: "c1"), now: h.now)
        h.take()
        #expect(h.machine.registry.queue(named: "q") != nil)
        h.machine.channelMethod(other.number, .basicCancel(consumerTag: "c2"), now: h.now)
        h.take()
        #expect(h.machine.registry.queue(named: "q") == nil, "its last consumer was cancelled by the broker")
    }

    @Test func aConsumerCancelledWhileTheConnectionIsDownIsForgottenWithItsQueue() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.autoDeleteSetup(&h)
        _ = h.consume("q", tag: "c1", on: shared)
        h.machine.connectionLost(RecoveryProtocolTests.reset, now: h.now)
        h.take()
        let waiter = h.waiter()
        h.machine.cancelConsumer(shared, consumerTag: "c1", waiter: .probe(waiter), now: h.now)
        let actions = h.take()
        #expect(actions.succeeded == [waiter] && actions.sends.isEmpty)
        #expect(h.machine.registry.queues.isEmpty && h.machine.registry.exchanges.isEmpty)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func unbindingTheLastBindingOfAnAutoDeleteExchangeForgetsIt() {
        var registry = TopologyRegistry()
        registry.record(.init(name: "a", type: "topic", durable: true, autoDelete: true, isInternal: false, arguments: [:]))
        registry.record(.init(name: "b", type: "topic", durable: true, autoDelete: true, isInternal: false, arguments: [:]))
        registry.record(.init(name: "kept", type: "topic", durable: true, autoDelete: false, isInternal: false, arguments: [:]))
        let ab = TopologyRegistry.Binding(destinationKind: .exchange, destination: "b", source: "a", routingKey: "#", arguments: [:])
        let bq = TopologyRegistry.Binding(destinationKind: .queue, destination: "q", source: "b", routingKey: "k", arguments: [:])
        let keptq = TopologyRegistry.Binding(destinationKind: .queue, destination: "q", source: "kept", routingKey: "k", arguments: [:])
        registry.record(ab)
        registry.record(bq)
        registry.record(keptq)
        registry.unbind(bq)
        // b lost its last binding: gone, and with it a -> b, so a (auto-delete) goes too.
        #expect(registry.exchanges.map(\.name) == ["kept"])
        #expect(registry.bindings == [keptq])
        registry.unbind(keptq)
        #expect(registry.exchanges.map(\.name) == ["kept"], "not auto-delete: kept")
    }

    @Test func anAutoDeleteExchangeThatNeverHadABindingIsNotForgotten() {
        var registry = TopologyRegistry()
        registry.record(.init(name: "fresh", type: "direct", durable: false, autoDelete: true, isInternal: false, arguments: [:]))
        registry.record(.init(requestedName: "q", name: "q", durable: false, exclusive: false, autoDelete: true, arguments: [:]))
        registry.deleteQueue(named: "q")
        #expect(registry.exchanges.map(\.name) == ["fresh"], "the broker deletes it only when its last binding goes")
    }
}
