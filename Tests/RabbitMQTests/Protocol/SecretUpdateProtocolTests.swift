import Testing

@testable import RabbitMQ

/// `connection.update-secret` in the protocol core: the secret is kept for every later login
/// whatever happens, and each caller is answered once, in the order the broker answers.
@Suite("Protocol core: secret updates")
struct SecretUpdateProtocolTests {
    private func secrets(_ actions: [MachineHarness.Action]) -> [String] {
        actions.compactMap { if case .storeSecret(let secret) = $0 { secret } else { nil } }
    }

    @Test func anOpenConnectionSendsTheSecretAndTheBrokersAnswersGoToTheCallersInOrder() {
        var h = MachineHarness()
        h.connect()
        let first = h.waiter()
        let second = h.waiter()
        h.machine.updateSecret("token-1", reason: "refresh", wire: true, waiter: .probe(first), now: h.now)
        h.machine.updateSecret("token-2", reason: "refresh", wire: true, waiter: .probe(second), now: h.now)
        var actions = h.take()
        #expect(secrets(actions) == ["token-1", "token-2"], "kept for later logins at once")
        #expect(actions.sends == [
            .init(0, .connectionUpdateSecret(secret: "token-1", reason: "refresh")),
            .init(0, .connectionUpdateSecret(secret: "token-2", reason: "refresh")),
        ])
        #expect(actions.succeeded.isEmpty, "answered by the broker, not before")
        h.machine.connectionMethod(.connectionUpdateSecretOk, now: h.now)
        actions = h.take()
        #expect(actions.succeeded == [first])
        if case .secretUpdate(let update) = actions.reply(to: first) { #expect(update == .applied) } else { Issue.record("no reply") }
        h.machine.connectionMethod(.connectionUpdateSecretOk, now: h.now)
        #expect(h.take().succeeded == [second])
        // A stray answer changes nothing and costs nothing.
        h.machine.connectionMethod(.connectionUpdateSecretOk, now: h.now)
        #expect(h.take().terminated == nil)
        #expect(h.machine.stateName == "open")
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func withoutAReadableAnswerTheSecretIsOnlyKeptForTheNextLogin() {
        var h = MachineHarness()
        h.connect()
        let caller = h.waiter()
        h.machine.updateSecret("token", reason: "refresh", wire: false, waiter: .probe(caller), now: h.now)
        let actions = h.take()
        #expect(secrets(actions) == ["token"])
        #expect(actions.sends.isEmpty, "rabbitmq-c 0.11 could not read update-secret-ok: nothing is sent")
        if case .secretUpdate(let update) = actions.reply(to: caller) { #expect(update == .nextLogin) } else { Issue.record("no reply") }
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func aConnectionLostBeforeTheAnswerCarriesTheSecretToRecovery() {
        var h = MachineHarness()
        h.connect()
        let caller = h.waiter()
        h.machine.updateSecret("token", reason: "refresh", wire: true, waiter: .probe(caller), now: h.now)
        h.take()
        h.loseAndReachConnect()
        let actions = h.log
        if case .secretUpdate(let update) = actions.reply(to: caller) { #expect(update == .nextLogin) } else { Issue.record("no reply") }
        // While recovering: kept, answered at once.
        let during = h.waiter()
        h.machine.updateSecret("token-2", reason: "refresh", wire: true, waiter: .probe(during), now: h.now)
        let later = h.take()
        #expect(secrets(later) == ["token-2"])
        #expect(later.sends.isEmpty)
        #expect(later.succeeded == [during])
        h.checkEveryWaiterAnsweredOnce()
    }

    /// Found in review: an update the broker never answers waited for ever. Now it times out
    /// like a request (whose deadline stands still while the broker blocks the connection),
    /// and its answer, if it comes late, is not taken for the next update's.
    @Test func anUnansweredUpdateTimesOutAndItsLateAnswerIsNotTheNextOnes() {
        var h = MachineHarness(settings: MachineHarness.settings(requestTimeout: .seconds(5)))
        h.connect(heartbeat: .zero)
        let slow = h.waiter()
        h.machine.updateSecret("token-1", reason: "refresh", wire: true, waiter: .probe(slow), now: h.now)
        h.take()
        #expect(h.machine.nextDeadline == h.now.advanced(by: .seconds(5)))
        h.advance(.seconds(5))
        var actions = h.take()
        #expect(actions.failed[slow]?.code == .timeout)
        #expect(actions.terminated == nil, "the connection goes on")
        #expect(h.machine.nextDeadline == nil, "nothing left to time out")
        let next = h.waiter()
        h.machine.updateSecret("token-2", reason: "refresh", wire: true, waiter: .probe(next), now: h.now)
        h.take()
        h.machine.connectionMethod(.connectionUpdateSecretOk, now: h.now)
        actions = h.take()
        #expect(actions.succeeded.isEmpty, "the late answer was the first update's")
        h.machine.connectionMethod(.connectionUpdateSecretOk, now: h.now)
        #expect(h.take().succeeded == [next])
        h.checkEveryWaiterAnsweredOnce()
    }

    /// RabbitMQ refuses a secret by closing the connection (530 NOT_ALLOWED): a login refusal,
    /// which recovery does not retry.
    @Test func aRefusedSecretEndsTheConnectionWithTheBrokersError() {
        var h = MachineHarness()
        h.connect()
        let caller = h.waiter()
        h.machine.updateSecret("bad", reason: "refresh", wire: true, waiter: .probe(caller), now: h.now)
        h.take()
        h.machine.connectionMethod(
            .connectionClose(ServerClose(replyCode: 530, replyText: "NOT_ALLOWED - New secret was refused", classID: 10, methodID: 70)),
            now: h.now)
        let actions = h.take()
        #expect(actions.failed[caller]?.code == .notAllowed)
        #expect(actions.terminated != nil, "not recovered: the broker refused the login")
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func closingOrClosedRefusesItAndAnEndWithAnswersPendingFailsThem() {
        var h = MachineHarness()
        h.connect()
        let pending = h.waiter()
        h.machine.updateSecret("token", reason: "refresh", wire: true, waiter: .probe(pending), now: h.now)
        h.machine.close(waiter: .probe(h.waiter()), now: h.now)
        h.take()
        let refused = h.waiter()
        h.machine.updateSecret("late", reason: "refresh", wire: true, waiter: .probe(refused), now: h.now)
        var actions = h.take()
        #expect(actions.failed[refused] != nil)
        #expect(secrets(actions).isEmpty, "a refused secret is not kept")
        h.machine.connectionMethod(.connectionCloseOk, now: h.now)
        actions = h.take()
        #expect(actions.failed[pending] != nil, "the connection ended before the broker answered")
        h.checkEveryWaiterAnsweredOnce()
    }
}
