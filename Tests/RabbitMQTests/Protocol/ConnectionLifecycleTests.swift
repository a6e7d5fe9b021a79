import Testing

@testable import RabbitMQ

/// The connection's own life in the protocol core: the close handshake, the broker's close,
/// blocking, heartbeats, deadlines.
@Suite("Protocol core: connection life")
struct ConnectionLifecycleTests {
    @Test func closeWaitsForOutstandingConfirmsThenForCloseOk() {
        var h = MachineHarness()
        h.connect()
        let shared = PublishingProtocolTests.confirming(&h)
        let channel = h.machine.channel(shared.number)!
        let ticket = ConfirmTicket()
        _ = h.machine.recordPublish(on: channel, message(), ticket: ticket, holdsSlot: true)
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        var actions = h.take()
        #expect(actions.phases == [.closing])
        #expect(actions.sends.isEmpty, "an unconfirmed publish is waited for")
        _ = h.machine.confirm(channel, tag: 1, multiple: false, acked: true, now: h.now) { $0.resolve(.success($1)) }
        actions = h.take()
        #expect(actions.sends == [.init(0, .connectionClose(replyCode: 200, replyText: "Normal shutdown"))])
        #expect(outcome(ticket) == .acked)
        h.machine.connectionMethod(.connectionCloseOk, now: h.now)
        actions = h.take()
        #expect(actions.terminated == .some(nil))
        #expect(actions.events.last == .closed(nil))
        #expect(actions.succeeded.contains(close))
        #expect(h.machine.isClosed)
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func closeEndsByItsDeadlineWhenConfirmsOrCloseOkNeverCome() {
        var h = MachineHarness(settings: MachineHarness.settings(closeTimeout: .seconds(3)))
        h.connect(heartbeat: .zero)
        let shared = PublishingProtocolTests.confirming(&h)
        let ticket = ConfirmTicket()
        _ = h.machine.recordPublish(on: h.machine.channel(shared.number)!, message(), ticket: ticket, holdsSlot: true)
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        h.take()
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(3)))
        h.advance(.seconds(3))
        let actions = h.take()
        #expect(actions.sends.last == .init(0, .connectionClose(replyCode: 200, replyText: "Normal shutdown")))
        #expect(actions.terminated == .some(nil))
        #expect(actions.succeeded.contains(close))
        #expect(actions.resolvedTickets.first.map { (try? $0.1.get()) == nil } == true, "the unconfirmed publish failed")
        h.checkEveryWaiterAnsweredOnce()
    }

    /// Defect: acknowledgements were refused while the connection closed gracefully.
    @Test func settlementsStillGoOutWhileClosingUntilTheCloseIsSent() {
        var h = MachineHarness()
        h.connect()
        let consumerChannel = h.openChannel()
        let publisher = PublishingProtocolTests.confirming(&h)
        _ = h.machine.recordPublish(on: h.machine.channel(publisher.number)!, message(), ticket: nil, holdsSlot: true)
        h.machine.close(waiter: .probe(h.waiter()), now: h.now)
        h.take()
        #expect(h.machine.settle(consumerChannel, epoch: h.machine.epoch) == consumerChannel.number)
        _ = h.machine.confirm(h.machine.channel(publisher.number)!, tag: 1, multiple: false, acked: true, now: h.now) { _, _ in }
        #expect(h.take().sends.contains(.init(0, .connectionClose(replyCode: 200, replyText: "Normal shutdown"))))
        #expect(h.machine.settle(consumerChannel, epoch: h.machine.epoch) == nil, "after connection.close nothing else is read")
    }

    @Test func theBrokerClosingTheConnectionIsAnsweredAndRecovered() {
        var h = MachineHarness()
        h.connect()
        _ = h.openChannel()
        h.machine.connectionMethod(.connectionClose(ServerClose(replyCode: 320, replyText: "CONNECTION_FORCED", classID: 0, methodID: 0)), now: h.now)
        let actions = h.take()
        #expect(actions.sends == [.init(0, .connectionCloseOk)])
        #expect(actions.contains(event: { if case .disconnected(let error) = $0 { error.code == .connectionForced } else { false } }))
        #expect(actions.phases == [.recovering])
        #expect(h.machine.stateName == "backingOff")
    }

    /// RabbitMQ 4 closes the whole connection when a request uses a feature it denies
    /// (4.3's defaults): the request it names fails with a typed error naming the feature;
    /// the other requests fail as lost with the connection, which recovers without it.
    @Test func aFeatureTheBrokerDeniesFailsItsRequestWithATypedErrorNotAsALostConnection() {
        var h = MachineHarness()
        h.connect()
        let first = h.openChannel()
        let second = h.openChannel()
        // A declaration of the same method that does not use the feature is not blamed.
        let purge = h.waiter()
        let durable = ChannelRequest.queueDeclare(name: "kept", passive: false, durable: true, exclusive: false, autoDelete: false, arguments: [:])
        h.machine.request(first, durable, waiter: .probe(purge), now: h.now)
        let declare = h.waiter()
        let transient = ChannelRequest.queueDeclare(name: "jobs", passive: false, durable: false, exclusive: false, autoDelete: false, arguments: [:])
        h.machine.request(second, transient, waiter: .probe(declare), now: h.now)
        h.take()
        let text = """
            INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.
            Its use is not permitted per the configuration (overriding the default, which is permitted):
            """
        h.machine.connectionMethod(.connectionClose(ServerClose(replyCode: 541, replyText: text, classID: 50, methodID: 10)), now: h.now)
        let actions = h.take()
        let refused = actions.failed[declare]
        #expect(refused?.code == .deprecatedFeature)
        #expect(refused?.deprecatedFeature == "transient_nonexcl_queues")
        #expect(refused?.message.contains("queue.declare of 'jobs'") == true, "\(String(describing: refused))")
        #expect(refused?.isRetriable == false)
        #expect(actions.failed[purge]?.code == .internalError, "the other request failed with the connection")
        #expect(actions.phases == [.recovering])
        #expect(!h.machine.registry.queues.contains { $0.name == "jobs" }, "never declared, so never restored")
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func twoRequestsThatCouldHaveUsedTheFeatureAreNeitherBlamed() {
        var h = MachineHarness()
        h.connect()
        let waiters = [h.waiter(), h.waiter()]
        let channels = [h.openChannel(), h.openChannel()]
        for (index, waiter) in waiters.enumerated() {
            let channel = channels[index]
            let transient = ChannelRequest.queueDeclare(
                name: "t\(index)", passive: false, durable: false, exclusive: false, autoDelete: false, arguments: [:])
            h.machine.request(channel, transient, waiter: .probe(waiter), now: h.now)
        }
        h.take()
        let text = "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated."
        h.machine.connectionMethod(.connectionClose(ServerClose(replyCode: 541, replyText: text, classID: 50, methodID: 10)), now: h.now)
        let failed = h.take().failed
        #expect(waiters.allSatisfy { failed[$0]?.code == .internalError }, "the close does not say which: \(failed)")
    }

    /// A transient queue recorded where the broker permitted it (before a failover to one that
    /// does not) is forgotten when recovery's declaration of it is refused, and reported; the
    /// next attempt does not declare it again (it would close every new connection).
    @Test func aQueueRecoveryCannotDeclareOnADenyingBrokerIsForgottenNotRetriedForEver() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        let transient = ChannelRequest.queueDeclare(name: "old", passive: false, durable: false, exclusive: false, autoDelete: false, arguments: [:])
        _ = h.request(transient, on: shared, reply: .queueDeclareOk(.init(name: "old", messageCount: 0, consumerCount: 0)))
        #expect(h.machine.registry.queue(named: "old") != nil)
        h.loseAndReachConnect()
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        RecoveryProtocolTests.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        RecoveryProtocolTests.answer(&h, .init(2, .channelOpen), with: .channelOpenOk)
        #expect(h.take().sends == [.init(2, .request(transient))])
        let text = "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated."
        h.machine.connectionMethod(.connectionClose(ServerClose(replyCode: 541, replyText: text, classID: 50, methodID: 10)), now: h.now)
        let actions = h.take()
        #expect(actions.contains(event: {
            if case .topologyRecoveryFailed("queue old", let error) = $0 { error.code == .deprecatedFeature } else { false }
        }))
        #expect(h.machine.registry.queue(named: "old") == nil)
        // The next attempt restores the channel and has nothing left to declare.
        guard let until = h.machine.nextDeadline else {
            Issue.record("no back-off")
            return
        }
        h.now = until
        h.machine.tick(now: h.now)
        h.take()
        h.machine.connected(heartbeat: .zero, endpoint: "e", now: h.now)
        RecoveryProtocolTests.answer(&h, .init(1, .channelOpen), with: .channelOpenOk)
        let rest = h.take()
        let declares = rest.sends.filter { sent in
            if case .request(.queueDeclare) = sent.method { true } else { false }
        }
        #expect(declares.isEmpty, "\(rest.sends)")
        #expect(rest.events.contains { event in if case .recovered = event { true } else { false } })
    }

    /// The refusal crosses the application's close: the request still gets the typed error,
    /// the close still ends normally, and every caller is answered once.
    @Test func aDeniedFeatureRefusedWhileTheApplicationClosesIsStillTyped() {
        var h = MachineHarness()
        h.connect()
        let channel = h.openChannel()
        let declare = h.waiter()
        let transient = ChannelRequest.queueDeclare(name: "jobs", passive: false, durable: false, exclusive: false, autoDelete: false, arguments: [:])
        h.machine.request(channel, transient, waiter: .probe(declare), now: h.now)
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        h.take()
        let text = "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated."
        h.machine.connectionMethod(.connectionClose(ServerClose(replyCode: 541, replyText: text, classID: 50, methodID: 10)), now: h.now)
        let actions = h.take()
        #expect(actions.failed[declare]?.code == .deprecatedFeature, "\(actions.failed)")
        #expect(actions.succeeded.contains(close))
        #expect(actions.terminated == .some(nil))
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func aCloseWithoutADeprecatedFeatureFailsEveryRequestAsLost() {
        var h = MachineHarness()
        h.connect()
        let channel = h.openChannel()
        let declare = h.waiter()
        h.machine.request(
            channel, .queueDeclare(name: "jobs", passive: false, durable: true, exclusive: false, autoDelete: false, arguments: [:]),
            waiter: .probe(declare), now: h.now)
        h.take()
        h.machine.connectionMethod(
            .connectionClose(ServerClose(replyCode: 541, replyText: "INTERNAL_ERROR", classID: 50, methodID: 10)), now: h.now)
        #expect(h.take().failed[declare]?.code == .internalError)
    }

    @Test func aCloseThatCrossesTheBrokersCloseEndsTheConnection() {
        var h = MachineHarness()
        h.connect()
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        h.take()
        h.machine.connectionMethod(.connectionClose(ServerClose(replyCode: 320, replyText: "shutdown", classID: 0, methodID: 0)), now: h.now)
        let actions = h.take()
        #expect(actions.terminated == .some(nil))
        #expect(actions.succeeded == [close])
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func anUnexpectedMethodOnChannelZeroIsAProtocolError() {
        var h = MachineHarness(settings: MachineHarness.settings { $0.isEnabled = false })
        h.connect()
        h.machine.connectionMethod(.basicQosOk, now: h.now)
        #expect(h.take().terminated??.code == .protocolError)
    }

    @Test func heartbeatsGoOutAfterHalfAnIntervalOfSilenceOnOurSide() {
        var h = MachineHarness()
        h.connect(heartbeat: .seconds(10))
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(5)))
        h.advance(.seconds(5))
        #expect(h.take().contains { if case .sendHeartbeat = $0 { true } else { false } })
        h.machine.heartbeat.sent(h.now.advanced(by: .seconds(1)))
        h.advance(.seconds(5))
        #expect(!h.take().contains { if case .sendHeartbeat = $0 { true } else { false } }, "we sent something a moment ago")
    }

    @Test func aSilentPeerIsCheckedWithTheKernelThenDeclaredDead() {
        var h = MachineHarness()
        h.connect(heartbeat: .seconds(2))
        h.machine.heartbeat.received(h.now)
        h.advance(.seconds(4))
        #expect(h.take().contains { if case .checkPeerSilence = $0 { true } else { false } })
        #expect(h.machine.heartbeat.checking, "one check at a time")
        // The kernel saw a heartbeat 1 s ago (rabbitmq-c took it without telling): fine.
        h.machine.peerSilence(.seconds(1), now: h.now)
        #expect(h.take().isEmpty)
        #expect(!h.machine.heartbeat.checking)
        #expect(h.machine.heartbeat.silenceDue == h.now.advanced(by: .seconds(3)))
        h.advance(.seconds(3))
        h.take()
        h.machine.peerSilence(.seconds(4), now: h.now)
        let actions = h.take()
        #expect(actions.contains(event: { if case .disconnected(let error) = $0 { error.code == .heartbeatTimeout } else { false } }))
    }

    /// The loop sleeps until ``ConnectionStateMachine/nextDeadline``: the earliest of the
    /// heartbeat to send, the peer's silence limit (unless a check is under way), request
    /// deadlines (unless blocked) and the close deadline, whichever phase the connection is in.
    @Test func theNextDeadlineIsTheEarliestOfWhatIsDueInEveryPhase() {
        var h = MachineHarness(settings: MachineHarness.settings(requestTimeout: .seconds(30), closeTimeout: .seconds(1)))
        h.connect(heartbeat: .seconds(10))
        let start = h.now
        #expect(h.machine.nextDeadline == start.advanced(by: .seconds(5)), "the next heartbeat to send")
        // Nothing received for a while: the silence limit (two intervals) comes first.
        h.machine.heartbeat.received(start.advanced(by: .seconds(-17)))
        #expect(h.machine.nextDeadline == start.advanced(by: .seconds(3)))
        h.advance(.seconds(3))
        #expect(h.take().contains { if case .checkPeerSilence = $0 { true } else { false } })
        #expect(h.machine.nextDeadline == start.advanced(by: .seconds(5)), "while the kernel is asked, only the heartbeat to send")
        h.machine.peerSilence(.zero, now: h.now)
        h.take()
        // A request whose deadline comes before the heartbeats.
        let shared = h.openChannel()
        h.machine.heartbeat.sent(h.now.advanced(by: .seconds(60)))
        h.machine.heartbeat.received(h.now.advanced(by: .seconds(60)))
        let waiter = h.waiter()
        h.machine.request(shared, .queuePurge(name: "q"), waiter: .probe(waiter), now: h.now)
        h.take()
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(30)))
        // Blocked: the request's deadline stands still, the heartbeats go on.
        h.machine.connectionMethod(.connectionBlocked(reason: "disk"), now: h.now)
        h.take()
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(65)))
        h.machine.connectionMethod(.connectionUnblocked, now: h.now)
        h.take()
        // Closing: the close deadline (1 s) is the earliest.
        let close = h.waiter()
        h.machine.close(waiter: .probe(close), now: h.now)
        h.take()
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(1)))
        h.advance(.seconds(1))
        h.take()
        #expect(h.machine.nextDeadline == nil, "closed: nothing left to wake for")
    }

    /// A recovery that reconnects with another heartbeat interval uses the new one.
    @Test func aReconnectWithAnotherHeartbeatIntervalUsesTheNewOne() {
        var h = MachineHarness()
        h.connect(heartbeat: .seconds(10))
        h.loseAndReachConnect()
        h.connect(heartbeat: .seconds(4))
        #expect(h.machine.phase == .open)
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(2)))
        h.machine.heartbeat.received(h.now.advanced(by: .seconds(-7)))
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(1)), "the silence limit is twice the new interval")
        h.loseAndReachConnect()
        h.connect(heartbeat: .zero)
        #expect(h.machine.phase == .open)
        #expect(h.machine.nextDeadline == nil, "heartbeats off on the new connection")
    }

    @Test func anIdleConnectionWithoutHeartbeatsHasNoDeadlineAtAll() {
        var h = MachineHarness()
        h.connect(heartbeat: .zero)
        _ = h.openChannel()
        #expect(h.machine.nextDeadline == nil, "idle means asleep: no timer")
        let waiter = h.waiter()
        h.machine.request(ChannelShared(number: 1, core: h.core), .queuePurge(name: "q"), waiter: .probe(waiter), now: h.now)
        h.take()
        // A stranger with the same number is refused: nothing pending, still no deadline.
        #expect(h.machine.nextDeadline == nil)
    }

    @Test func commandsAfterTheEndFailWithTheReasonTheConnectionEnded() {
        var h = MachineHarness(settings: MachineHarness.settings { $0.isEnabled = false })
        h.connect()
        let shared = h.openChannel()
        h.machine.connectionLost(RabbitMQError(code: .socketError, scope: .connection, message: "reset by peer"), now: h.now)
        h.take()
        let waiter = h.waiter()
        h.machine.request(shared, .queuePurge(name: "q"), waiter: .probe(waiter), now: h.now)
        #expect(h.take().failed[waiter]?.message.contains("reset by peer") == true)
        guard case .fail(let error) = h.machine.routePublish(shared) else {
            Issue.record("a publish after the end was not refused")
            return
        }
        #expect(error.message.contains("reset by peer"))
        h.checkEveryWaiterAnsweredOnce()
    }
}
