import Testing

@testable import RabbitMQ

@Suite("Recovery logic (no broker)")
struct RecoveryLogicTests {
    @Test func backoffGrowsExponentiallyUpToTheMaximum() {
        var recovery = RabbitMQConfiguration.Recovery()
        recovery.initialDelay = .milliseconds(100)
        recovery.maxDelay = .seconds(1)
        recovery.multiplier = 2
        recovery.jitter = 0
        var backoff = Backoff(recovery)
        let delays = (0..<6).map { _ in backoff.next { 0.5 } }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        backoff.reset()
        #expect(backoff.next { 0.5 } == .milliseconds(100))
    }

    @Test func jitterStaysWithinItsFraction() {
        var recovery = RabbitMQConfiguration.Recovery()
        recovery.initialDelay = .seconds(1)
        recovery.maxDelay = .seconds(1)
        recovery.jitter = 0.5
        var low = Backoff(recovery)
        var high = Backoff(recovery)
        #expect(low.next { 0 } == .milliseconds(500))
        #expect(high.next { 0.999_999_999 } <= .seconds(1))
        #expect(high.next { 0.999_999_999 } > .milliseconds(999))
    }

    @Test func registryRecordsInOrderAndForgetsDeletions() {
        var registry = TopologyRegistry()
        registry.record(.init(name: "x", type: "topic", durable: true, autoDelete: false, isInternal: false, arguments: [:]))
        registry.record(.init(name: "y", type: "fanout", durable: false, autoDelete: false, isInternal: false, arguments: [:]))
        registry.record(.init(requestedName: "q", name: "q", durable: true, exclusive: false, autoDelete: false, arguments: [:]))
        registry.record(.init(destinationKind: .queue, destination: "q", source: "x", routingKey: "a.*", arguments: [:]))
        registry.record(.init(destinationKind: .exchange, destination: "y", source: "x", routingKey: "#", arguments: [:]))
        registry.record(.init(destinationKind: .queue, destination: "q", source: "x", routingKey: "a.*", arguments: [:]))
        #expect(registry.exchanges.map(\.name) == ["x", "y"])
        #expect(registry.bindings.count == 2, "a repeated binding is recorded once")

        registry.deleteExchange(named: "y")
        #expect(registry.exchanges.map(\.name) == ["x"])
        #expect(registry.bindings.map(\.destination) == ["q"], "bindings to a deleted exchange are forgotten")
        registry.removeBinding(.init(destinationKind: .queue, destination: "q", source: "x", routingKey: "a.*", arguments: [:]))
        #expect(registry.bindings.isEmpty)
        registry.deleteQueue(named: "q")
        #expect(registry.queues.isEmpty)
    }

    @Test func renamedServerNamedQueuesTakeTheirBindingsAlong() {
        var registry = TopologyRegistry()
        registry.record(.init(requestedName: "", name: "amq.gen-A", durable: false, exclusive: true, autoDelete: true, arguments: [:]))
        registry.record(.init(destinationKind: .queue, destination: "amq.gen-A", source: "events", routingKey: "", arguments: [:]))
        registry.record(.init(destinationKind: .queue, destination: "other", source: "events", routingKey: "", arguments: [:]))
        #expect(registry.queue(named: "amq.gen-A")?.isServerNamed == true)
        registry.renameQueue(from: "amq.gen-A", to: "amq.gen-B")
        #expect(registry.queue(named: "amq.gen-B") != nil)
        #expect(registry.queue(named: "amq.gen-A") == nil)
        #expect(registry.bindings.map(\.destination) == ["amq.gen-B", "other"])
    }

    @Test func recoveryConfigurationIsValidated() {
        var configuration = RabbitMQConfiguration()
        configuration.recovery.maxAttempts = 0
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration()
        configuration.recovery.jitter = 2
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
        configuration = RabbitMQConfiguration()
        configuration.recovery.maxDelay = .milliseconds(1)
        #expect(throws: RabbitMQError.self) { try configuration.validate() }
    }

    @Test func whichLossesAreRecovered() {
        #expect(RecoveryPlan.isRecoverable(RabbitMQError(code: .connectionForced, message: "")))
        #expect(RecoveryPlan.isRecoverable(RabbitMQError(code: .heartbeatTimeout, message: "")))
        #expect(RecoveryPlan.isRecoverable(RabbitMQError(code: .socketError, message: "")))
        #expect(!RecoveryPlan.isRecoverable(RabbitMQError(code: .authenticationFailed, message: "")))
        #expect(!RecoveryPlan.isRecoverable(RabbitMQError(code: .notAllowed, message: "")))
        #expect(!RecoveryPlan.isRecoverable(RabbitMQError(code: .closed, message: "")))
    }
}
