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
        h.machine.updateSecret("token-1", reason: "refresh", wire: true, waiter: .probe(first))
        h.machine.updateSecret("token-2", reason: "refresh", wire: true, waiter: .probe(second))
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
        h.machine.updateSecret("token", reason: "refresh", wire: false, waiter: .probe(caller))
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
        h.machine.updateSecret("token", reason: "refresh", wire: true, waiter: .probe(caller))
        h.take()
        h.loseAndReachConnect()
        let actions = h.log
        if case .secretUpdate(let update) = actions.reply(to: caller) { #expect(update == .nextLogin) } else { Issue.record("no reply") }
        // While recovering: kept, answered at once.
        let during = h.waiter()
        h.machine.updateSecret("token-2", reason: "refresh", wire: true, waiter: .probe(during))
        let later = h.take()
        #expect(secrets(later) == ["token-2"])
        #expect(later.sends.isEmpty)
        #expect(later.succeeded == [during])
        h.checkEveryWaiterAnsweredOnce()
    }

    @Test func closingOrClosedRefusesItAndAnEndWithAnswersPendingFailsThem() {
        var h = MachineHarness()
        h.connect()
        let pending = h.waiter()
        h.machine.updateSecret("token", reason: "refresh", wire: true, waiter: .probe(pending))
        h.machine.close(waiter: .probe(h.waiter()), now: h.now)
        h.take()
        let refused = h.waiter()
        h.machine.updateSecret("late", reason: "refresh", wire: true, waiter: .probe(refused))
        var actions = h.take()
        #expect(actions.failed[refused] != nil)
        #expect(secrets(actions).isEmpty, "a refused secret is not kept")
        h.machine.connectionMethod(.connectionCloseOk, now: h.now)
        actions = h.take()
        #expect(actions.failed[pending] != nil, "the connection ended before the broker answered")
        h.checkEveryWaiterAnsweredOnce()
    }
}
