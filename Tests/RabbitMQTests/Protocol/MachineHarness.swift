import Testing

@testable import RabbitMQ

/// Drives a ``ConnectionStateMachine`` event by event with a fake clock and a fixed random
/// source, and keeps a ledger of its callers: every waiter handed to it must be answered
/// exactly once (``checkEveryWaiterAnsweredOnce()``), whatever happened in between.
/// Waiters are plain integers here.
struct MachineHarness {
    typealias Machine = ConnectionStateMachine
    typealias Action = ConnectionAction

    var machine: Machine
    /// The fake clock.
    var now: ContinuousClock.Instant
    let core: ConnectionCore
    /// Every action taken so far, oldest first.
    private(set) var log: [Action] = []
    /// Waiters handed to the machine, and how often each was answered.
    private(set) var answered: [Int: Int] = [:]
    private var nextWaiter = 1
    /// Channel numbers handed out (the machine's recovery channel comes from here too).
    private let numbers: Numbers
    var numbersForTests: Numbers { numbers }

    final class Numbers: @unchecked Sendable {
        // @unchecked Sendable: used by one test's harness on the test's own task only.
        var allocator = ChannelNumberAllocator(max: 8)
        var exhausted = false
    }

    init(settings: Machine.Settings = Self.settings(), random: Double = 0.5) {
        let numbers = Numbers()
        self.numbers = numbers
        var configuration = RabbitMQConfiguration()
        configuration.connectionName = "harness"
        core = ConnectionCore(configuration: configuration, id: 0, name: "harness", wakeDescriptor: try! IOLoop.makeWakeDescriptor())
        machine = Machine(
            settings: settings,
            allocateChannel: { numbers.exhausted ? nil : numbers.allocator.allocate() },
            releaseChannel: { numbers.allocator.release($0) },
            random: { random })
        now = .now
    }

    static func settings(
        requestTimeout: Duration = .seconds(30), closeTimeout: Duration = .seconds(10),
        recovery: (inout RabbitMQConfiguration.Recovery) -> Void = { _ in }
    ) -> Machine.Settings {
        var settings = Machine.Settings()
        settings.requestTimeout = requestTimeout
        settings.closeTimeout = closeTimeout
        settings.recovery.initialDelay = .seconds(1)
        settings.recovery.maxDelay = .seconds(8)
        settings.recovery.jitter = 0
        recovery(&settings.recovery)
        return settings
    }

    // MARK: Time

    mutating func advance(_ duration: Duration) {
        now = now.advanced(by: duration)
        machine.tick(now: now)
    }

    // MARK: Actions

    /// The actions since the last call, recorded in the ledger.
    @discardableResult
    mutating func take() -> [Action] {
        var buffer: [Action] = []
        machine.takeActions(into: &buffer)
        for action in buffer {
            switch action {
            case .succeed(let waiter, _), .fail(let waiter, _):
                if let probe = waiter.probe { answered[probe, default: 0] += 1 }
            default: break
            }
        }
        log += buffer
        return buffer
    }

    mutating func waiter() -> Int {
        defer { nextWaiter += 1 }
        answered[nextWaiter] = 0
        return nextWaiter
    }

    /// No waiter was left unanswered or answered twice.
    func checkEveryWaiterAnsweredOnce(sourceLocation: SourceLocation = #_sourceLocation) {
        let wrong = answered.filter { $0.value != 1 }
        #expect(wrong.isEmpty, "waiters answered other than once: \(wrong.sorted { $0.key < $1.key })", sourceLocation: sourceLocation)
    }

    // MARK: Steps

    /// Connects (first connect) with heartbeats of `heartbeat`.
    mutating func connect(heartbeat: Duration = .seconds(10)) {
        machine.connected(heartbeat: heartbeat, endpoint: "amqp://test:5672", now: now)
        take()
    }

    /// Opens a channel to the end (open sent, open-ok received); returns its shared half.
    mutating func openChannel() -> ChannelShared {
        let number = numbers.allocator.allocate()!
        let shared = ChannelShared(number: number, core: core)
        let waiter = waiter()
        machine.openChannel(shared, waiter: .probe(waiter), now: now)
        let sent = take()
        #expect(sent.sends == [.init(number, .channelOpen)])
        machine.channelMethod(number, .channelOpenOk, now: now)
        #expect(take().succeeded == [waiter])
        return shared
    }

    /// A request answered by `reply` (the machine must send it and succeed its waiter).
    mutating func request(_ request: ChannelRequest, on shared: ChannelShared, reply: InboundMethod) -> [Action] {
        let waiter = waiter()
        machine.request(shared, request, waiter: .probe(waiter), now: now)
        #expect(take().sends == [.init(shared.number, .request(request))])
        machine.channelMethod(shared.number, reply, now: now)
        let actions = take()
        #expect(actions.succeeded == [waiter])
        return actions
    }

    /// Starts a consumer to the end; returns its sink.
    mutating func consume(
        _ queue: String, tag: String, on shared: ChannelShared, noAck: Bool = false
    ) -> ConsumerSink {
        let sink = ConsumerSink(buffer: DeliveryBuffer(), noAck: noAck, handler: nil)
        let request = ConsumeRequest(queue: queue, consumerTag: tag, noAck: noAck, exclusive: false, arguments: [:])
        let waiter = waiter()
        machine.consume(shared, request, sink: sink, waiter: .probe(waiter), now: now)
        #expect(take().sends == [.init(shared.number, .basicConsume(request))])
        machine.channelMethod(shared.number, .basicConsumeOk(consumerTag: tag), now: now)
        #expect(take().succeeded == [waiter])
        return sink
    }

    /// Delivers a whole message (method, header, body frames) on `number`; returns what the
    /// machine made of it.
    mutating func deliver(
        _ body: String, tag: UInt64, consumerTag: String, on number: UInt16, properties: RabbitMQProperties? = nil
    ) -> ContentOutcome? {
        guard let channel = machine.channel(number) else { return nil }
        let delivery = RabbitMQDelivery(
            body: [], properties: RabbitMQProperties(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: tag,
            consumerTag: consumerTag, messageCount: nil, channel: nil, epoch: machine.epoch)
        #expect(channel.beginContent(.deliver, delivery) == nil)
        return complete(body, on: channel, properties: properties)
    }

    /// Sends header and body frames for a content whose method arrived.
    mutating func complete(_ body: String, on channel: Machine.ChannelMachine, properties: RabbitMQProperties? = nil) -> ContentOutcome? {
        let bytes = Array(body.utf8)
        switch channel.contentHeader(bodySize: UInt64(bytes.count), properties: properties) {
        case .complete: return machine.contentComplete(channel)
        case .protocolError(let message):
            Issue.record("protocol error: \(message)")
            return nil
        case .incomplete: break
        }
        let progress = bytes.withUnsafeBytes { channel.contentBody($0) }
        switch progress {
        case .complete: return machine.contentComplete(channel)
        case .protocolError(let message):
            Issue.record("protocol error: \(message)")
            return nil
        case .incomplete:
            Issue.record("the body did not complete the content")
            return nil
        }
    }

    /// Loses the connection and runs the plan to the end of its back-off: a connect is asked for.
    mutating func loseAndReachConnect(_ error: RabbitMQError = .init(code: .socketError, scope: .connection, message: "reset")) {
        machine.connectionLost(error, now: now)
        take()
        guard let until = machine.nextDeadline else {
            Issue.record("no back-off deadline")
            return
        }
        now = until
        machine.tick(now: now)
        #expect(take().contains { if case .connect = $0 { true } else { false } })
    }
}

/// A `send` action, comparable.
struct Sent: Equatable, CustomStringConvertible {
    var channel: UInt16
    var method: OutboundMethod
    init(_ channel: UInt16, _ method: OutboundMethod) {
        self.channel = channel
        self.method = method
    }
    var description: String { "\(channel): \(method)" }
}

extension Array where Element == ConnectionAction {
    var sends: [Sent] {
        compactMap { if case .send(let channel, let method) = $0 { Sent(channel, method) } else { nil } }
    }

    var succeeded: [Int] {
        compactMap { if case .succeed(let waiter, _) = $0 { waiter.probe } else { nil } }
    }

    func reply(to waiter: Int) -> ChannelReply? {
        for case .succeed(let answered, let reply) in self where answered.probe == waiter { return reply }
        return nil
    }

    var failed: [Int: RabbitMQError] {
        var failed: [Int: RabbitMQError] = [:]
        for case .fail(let waiter, let error) in self { if let probe = waiter.probe { failed[probe] = error } }
        return failed
    }

    var events: [RabbitMQConnectionEvent] {
        compactMap { if case .emit(let event) = $0 { event } else { nil } }
    }

    var phases: [ConnectionPhase] {
        compactMap { if case .setPhase(let phase) = $0 { phase } else { nil } }
    }

    /// Consumers ended, with the error each ended with (nil: normally).
    var finishedConsumers: [(ConsumerSink, RabbitMQError?)] {
        compactMap { if case .finishConsumer(let sink, let error) = $0 { (sink, error) } else { nil } }
    }

    var publishes: [(UInt16, OutboundMessage, UInt64?, Bool)] {
        compactMap {
            if case .publish(let channel, let message, let tag, let holdsRoom) = $0 { (channel, message, tag, holdsRoom) } else { nil }
        }
    }

    var resolvedTickets: [(ConfirmTicket, Result<RabbitMQPublishOutcome, RabbitMQError>)] {
        compactMap { if case .resolveTicket(let ticket, let result) = $0 { (ticket, result) } else { nil } }
    }

    var releasedSlots: Int {
        reduce(0) { if case .releaseConfirmSlots(_, let count) = $1 { $0 + count } else { $0 } }
    }

    var releasedRoom: Int {
        reduce(0) { if case .releasePublishRoom(let count) = $1 { $0 + count } else { $0 } }
    }

    var releasedNumbers: [UInt16] {
        compactMap { if case .channelGone(let number) = $0 { number } else { nil } }
    }

    var terminated: RabbitMQError?? {
        for case .terminate(let error) in self { return .some(error) }
        return nil
    }

    var connects: [Int] {
        compactMap { if case .connect(let attempt) = $0 { attempt } else { nil } }
    }

    func contains(event matching: (RabbitMQConnectionEvent) -> Bool) -> Bool {
        events.contains(where: matching)
    }
}

extension ContentOutcome {
    var delivery: RabbitMQDelivery? {
        if case .deliver(_, let delivery) = self { delivery } else { nil }
    }

    var isNone: Bool {
        if case .none = self { true } else { false }
    }
}

extension ConnectionStateMachine {
    var stateName: String {
        switch state {
        case .connecting: "connecting"
        case .open: "open"
        case .blocked: "blocked"
        case .closing: "closing"
        case .recovering(let plan):
            switch plan.step {
            case .backingOff: "backingOff"
            case .connecting: "reconnecting"
            case .restoring: "restoring"
            }
        case .closed: "closed"
        }
    }
}

func message(_ body: String = "m", routingKey: String = "q", mandatory: Bool = false) -> OutboundMessage {
    OutboundMessage(body: Array(body.utf8), exchange: "", routingKey: routingKey, properties: RabbitMQProperties(), mandatory: mandatory)
}
