import Testing

@testable import RabbitMQ

/// Publishing in the protocol core: routing, holding, the confirm window, returns.
@Suite("Protocol core: publishing and confirms")
struct PublishingProtocolTests {
    /// A channel in confirm mode (confirm.select answered).
    static func confirming(_ h: inout MachineHarness) -> ChannelShared {
        let shared = h.openChannel()
        _ = h.request(.confirmSelect, on: shared, reply: .confirmSelectOk)
        #expect(h.machine.channel(shared.number)?.confirmMode == true)
        return shared
    }

    @Test func aPublishGoesOutOnAnOpenChannelAndFailsOnAClosedOne() {
        var h = MachineHarness()
        h.connect()
        let shared = h.openChannel()
        guard case .send(let channel) = h.machine.routePublish(shared) else {
            Issue.record("not sent")
            return
        }
        #expect(h.machine.recordPublish(on: channel, message(), ticket: nil, holdsSlot: false) == nil, "not in confirm mode: nothing recorded")
        h.machine.closeChannel(shared, waiter: .probe(h.waiter()), now: h.now)
        h.take()
        guard case .fail = h.machine.routePublish(shared) else {
            Issue.record("a publish on a closing channel was not refused")
            return
        }
        let stranger = ChannelShared(number: 9, core: h.core)
        guard case .fail = h.machine.routePublish(stranger) else {
            Issue.record("a publish on an unknown channel was not refused")
            return
        }
    }

    @Test func confirmsResolveTheirPublishesAndGiveBackOnlyTheSlotsTaken() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.confirming(&h)
        let channel = h.machine.channel(shared.number)!
        var tickets: [ConfirmTicket] = []
        for index in 0..<5 {
            let ticket = ConfirmTicket()
            tickets.append(ticket)
            // The third raced confirmSelect: admitted without a slot, it must not give one back.
            #expect(h.machine.recordPublish(on: channel, message("m\(index)"), ticket: ticket, holdsSlot: index != 2) == nil)
        }
        var resolved: [RabbitMQPublishOutcome] = []
        var slots = h.machine.confirm(channel, tag: 3, multiple: true, acked: true, now: h.now) { ticket, outcome in
            ticket.resolve(.success(outcome))
            resolved.append(outcome)
        }
        #expect(resolved == [.acked, .acked, .acked])
        #expect(slots == 2)
        slots = h.machine.confirm(channel, tag: 5, multiple: false, acked: false, now: h.now) { $0.resolve(.success($1)) }
        #expect(slots == 1)
        #expect(outcome(tickets[4]) == .nacked)
        #expect(tickets[3].result == nil, "4 is still unconfirmed")
        #expect(channel.unconfirmed.count == 1)
    }

    /// Defect: a return was matched to its publish by comparing bodies.
    @Test func aReturnFindsItsPublishByTheSequenceNumberItCarries() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.confirming(&h)
        let channel = h.machine.channel(shared.number)!
        let routed = ConfirmTicket()
        let unroutable = ConfirmTicket()
        // Same exchange, key and body: only the sequence number tells them apart.
        #expect(h.machine.recordPublish(on: channel, message("same", mandatory: true), ticket: routed, holdsSlot: true) == 1)
        #expect(h.machine.recordPublish(on: channel, message("same", mandatory: true), ticket: unroutable, holdsSlot: true) == 2)
        _ = channel.beginContent(
            .returned(replyCode: 312, replyText: "NO_ROUTE"),
            RabbitMQDelivery(
                body: [], properties: .init(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: 0, consumerTag: "",
                messageCount: nil, channel: nil, epoch: 1))
        var headers: RabbitMQFieldTable = ["app": "kept"]
        headers[Unconfirmed.returnTagHeader] = .int64(2)
        #expect(h.complete("same", on: channel, properties: RabbitMQProperties(headers: headers))?.isNone == true)
        let actions = h.take()
        guard case .returned(_, let returned)? = actions.first else {
            Issue.record("no return: \(actions)")
            return
        }
        #expect(returned.properties.headers == ["app": "kept"], "our header is not handed to the application")
        _ = h.machine.confirm(channel, tag: 2, multiple: true, acked: true, now: h.now) { $0.resolve(.success($1)) }
        #expect(outcome(routed) == .acked)
        #expect(outcome(unroutable) == .returned(returned))
    }

    @Test func publishesAreHeldWhileBlockedAndGoOutInOrderWhenUnblocked() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.confirming(&h)
        h.machine.connectionMethod(.connectionBlocked(reason: "low on memory"), now: h.now)
        #expect(h.take().events == [.blocked(reason: "low on memory")])
        for index in 0..<3 {
            guard case .hold = h.machine.routePublish(shared) else {
                Issue.record("not held while blocked")
                return
            }
            h.machine.hold(shared, message("m\(index)"), ticket: nil, holdsSlot: true)
        }
        h.machine.connectionMethod(.connectionUnblocked, now: h.now)
        let actions = h.take()
        #expect(actions.events == [.unblocked])
        #expect(actions.publishes.map { String(decoding: $0.1.body, as: UTF8.self) } == ["m0", "m1", "m2"])
        #expect(actions.publishes.allSatisfy { $0.3 }, "held publishes kept their room")
        #expect(h.machine.channel(shared.number)?.unconfirmed.count == 3)
    }

    /// Defect: request deadlines ran while the broker did not read (blocked).
    @Test func requestDeadlinesStandStillWhileTheConnectionIsBlocked() {
        var h = MachineHarness(settings: MachineHarness.settings(requestTimeout: .seconds(5)))
        h.connect(heartbeat: .zero)
        let shared = h.openChannel()
        let waiter = h.waiter()
        h.machine.request(shared, .queuePurge(name: "q"), waiter: .probe(waiter), now: h.now)
        h.take()
        h.advance(.seconds(2))
        h.machine.connectionMethod(.connectionBlocked(reason: "disk"), now: h.now)
        h.take()
        #expect(h.machine.nextDeadline == nil, "no deadline runs while blocked")
        h.advance(.seconds(60))
        #expect(h.take().failed.isEmpty, "no timeout while blocked")
        h.machine.connectionMethod(.connectionUnblocked, now: h.now)
        h.take()
        h.advance(.seconds(2))
        #expect(h.take().failed.isEmpty, "the 3 s left before the block are still left")
        h.advance(.seconds(1))
        #expect(h.take().failed[waiter]?.code == .timeout)
    }

    @Test func aPublishThatCannotBeEncodedFailsAloneAndGivesItsSlotBack() {
        var h = MachineHarness()
        h.connect()
        let shared = Self.confirming(&h)
        let channel = h.machine.channel(shared.number)!
        let ticket = ConfirmTicket()
        _ = h.machine.recordPublish(on: channel, message(), ticket: ticket, holdsSlot: true)
        h.machine.publishRefused(on: channel, recorded: true, error: RabbitMQError(code: .invalidConfiguration, message: "too big"))
        let actions = h.take()
        #expect(actions.resolvedTickets.count == 1 && actions.releasedSlots == 1)
        #expect(channel.unconfirmed.isEmpty)
    }
}

func outcome(_ ticket: ConfirmTicket) -> RabbitMQPublishOutcome? {
    guard let result = ticket.result else { return nil }
    return try? result.get()
}
