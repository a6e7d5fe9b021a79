/// Every protocol decision of one connection, with no I/O, no C, no clock and no randomness
/// of its own: events in (a caller's command, a decoded method, a content frame, a deadline
/// reached, the socket failing, a connect attempt's result), actions out (``actions``, which
/// the I/O loop carries out in order). Tests drive it event by event with a fake clock.
///
/// A class used by one thread only (its I/O loop, or a test): the properties the hot paths
/// touch skip the dynamic exclusivity checks (`@exclusivity(unchecked)`); the static ones stay.
///
/// The connection's phase is one enum, ``State``; each channel's is a
/// ``ChannelStateMachine``. The hot paths (publish routing, content assembly, confirms) are
/// methods that return what to do directly, so a message costs no action.
final class ConnectionStateMachine {
    typealias ChannelMachine = ChannelStateMachine

    enum State {
        /// The first connect attempt has not succeeded yet.
        case connecting
        case open
        /// The broker stopped reading from the connection (`connection.blocked`): publishes
        /// are held, request deadlines stand still.
        case blocked(BlockedState)
        /// `close()` was called: waiting for outstanding confirms, then for close-ok.
        case closing(Closing)
        /// The connection was lost: the plan backs off, reconnects and restores.
        case recovering(RecoveryPlan)
        case closed
    }

    struct Closing {
        var waiters: [Waiter]
        var deadline: ContinuousClock.Instant
        var sentClose = false
        var blocked: BlockedState?
    }

    /// What the machine needs from the configuration (values only).
    struct Settings: Sendable {
        var requestTimeout: Duration = .seconds(30)
        var closeTimeout: Duration = .seconds(10)
        var recovery = RabbitMQConfiguration.Recovery()

        init() {}

        init(_ configuration: RabbitMQConfiguration) {
            requestTimeout = configuration.requestTimeout
            closeTimeout = configuration.closeTimeout
            recovery = configuration.recovery
        }
    }

    /// A publish held while the connection is blocked or recovering. It keeps its room in
    /// the publish buffer until it is sent or failed.
    struct Held {
        var shared: ChannelShared
        var message: OutboundMessage
        var ticket: ConfirmTicket?
        var holdsSlot: Bool
        /// Not sent after this (an RPC request whose call has timed out by then). Boxed: the
        /// instant's type has no fixed size, and this array is on the publish path.
        var deadline: PublishDeadline?
    }

    /// When a held publish stops being worth sending.
    final class PublishDeadline: Sendable {
        let instant: ContinuousClock.Instant
        init(_ instant: ContinuousClock.Instant) { self.instant = instant }
    }

    /// Where a publish goes.
    enum PublishRoute {
        case send(ChannelStateMachine)
        case hold
        case fail(RabbitMQError)
    }

    /// ``State`` without its payloads, for the hot paths: a switch over `state` copies its
    /// payloads (a recovery plan, a closing's waiters), one over this copies nothing.
    enum Phase: UInt8 {
        case connecting, open, blocked, closingOpen, closingBlocked, closingSent, recovering, closed
    }

    let settings: Settings
    @exclusivity(unchecked) var state = State.connecting {
        didSet { phase = Self.phase(of: state) }
    }
    @exclusivity(unchecked) private(set) var phase = Phase.connecting
    @exclusivity(unchecked) private(set) var channels: [UInt16: ChannelStateMachine] = [:] {
        didSet { lastChannel = nil }
    }
    /// The channel of the last frame or publish: they come in runs, so most lookups skip hashing.
    @exclusivity(unchecked) private var lastChannel: ChannelStateMachine?
    /// What was declared successfully, to declare again after a reconnect.
    private(set) var registry = TopologyRegistry()
    /// Bumped on every reconnect; deliveries carry it so settlements of older ones are dropped.
    @exclusivity(unchecked) private(set) var epoch: UInt64 = 1
    @exclusivity(unchecked) private(set) var held: [Held] = []
    /// Why the connection closed, once it has.
    private(set) var terminalError: RabbitMQError?
    @exclusivity(unchecked) private var heldHead = 0
    /// `connection.update-secret`s sent, in order: the broker answers them in order, with
    /// nothing to tell the answers apart. One whose caller timed out stays, without its
    /// waiter, until its answer comes, so that the answer is not taken for the next one's.
    private(set) var secretUpdates: [SecretUpdate] = []

    struct SecretUpdate {
        var waiter: Waiter?
        var deadline: ContinuousClock.Instant
    }
    @exclusivity(unchecked) var heartbeat = HeartbeatState()
    /// What to do next, in order; the loop takes them with ``takeActions(into:)``.
    @exclusivity(unchecked) private(set) var actions: [ConnectionAction] = []
    /// A channel number for the recovery plan's own channel (the connection's allocator).
    private let allocateChannel: () -> UInt16?
    /// Gives a number back to the allocator, at once: the plan may need it right away.
    private let releaseChannel: (UInt16) -> Void
    /// A value in 0..<1 for the back-off's jitter.
    let random: () -> Double

    init(
        settings: Settings, allocateChannel: @escaping () -> UInt16?, releaseChannel: @escaping (UInt16) -> Void,
        random: @escaping () -> Double
    ) {
        self.settings = settings
        self.allocateChannel = allocateChannel
        self.releaseChannel = releaseChannel
        self.random = random
    }

    /// Moves the pending actions out (keeping both buffers' capacity).
    func takeActions(into buffer: inout [ConnectionAction]) {
        buffer.removeAll(keepingCapacity: true)
        swap(&buffer, &actions)
    }

    func emit(_ action: ConnectionAction) {
        actions.append(action)
    }

    private static func phase(of state: State) -> Phase {
        switch state {
        case .connecting: .connecting
        case .open: .open
        case .blocked: .blocked
        case .closing(let closing): closing.sentClose ? .closingSent : closing.blocked != nil ? .closingBlocked : .closingOpen
        case .recovering: .recovering
        case .closed: .closed
        }
    }

    // MARK: Lookups

    @inline(__always)
    func channel(_ number: UInt16) -> ChannelStateMachine? {
        if let lastChannel, lastChannel.number == number { return lastChannel }
        let channel = channels[number]
        lastChannel = channel
        return channel
    }

    /// The channel `shared` stands for, if it is still that one (numbers are reused).
    @inline(__always)
    func channel(for shared: ChannelShared) -> ChannelStateMachine? {
        guard let channel = channel(shared.number), channel.shared === shared else { return nil }
        return channel
    }

    var isConnected: Bool {
        switch phase {
        case .open, .blocked, .closingOpen, .closingBlocked, .closingSent: return true
        case .recovering: return isRestoring
        case .connecting, .closed: return false
        }
    }

    // The per-turn checks read `phase` only; reading a payload of `state` is kept out of
    // line, in the functions below, so that the open phases never copy it (its layout is
    // only known at run time: it holds `ContinuousClock.Instant`s, a resilient type).

    @inline(never)
    private var isRestoring: Bool {
        if case .recovering(let plan) = state, case .restoring = plan.step { true } else { false }
    }

    var isClosed: Bool { phase == .closed }

    private var blocked: BlockedState? {
        switch state {
        case .blocked(let blocked): blocked
        case .closing(let closing): closing.blocked
        case .recovering(let plan): plan.blocked
        default: nil
        }
    }

    /// Why a command on `shared` cannot run: the channel's close reason, else a closed channel.
    func closedError(_ shared: ChannelShared) -> RabbitMQError {
        shared.closeReason ?? .channelClosed()
    }

    static var recoveringError: RabbitMQError {
        RabbitMQError(code: .connectionClosed, scope: .none, message: "the connection is recovering; try again when it is back")
    }

    static var closedByApplication: RabbitMQError {
        RabbitMQError(code: .closed, scope: .connection, message: "the connection was closed by the application")
    }

    static var channelClosedByApplication: RabbitMQError {
        RabbitMQError(code: .closed, scope: .channel, message: "the channel was closed by the application")
    }

    /// Whether new requests can go on the wire now; else the error to fail them with.
    private var requestRefusal: RabbitMQError? {
        switch state {
        case .open, .blocked: nil
        case .closing(let closing): closing.sentClose ? .connectionClosed("the connection is closing") : nil
        case .recovering: Self.recoveringError
        case .connecting: .connectionClosed()
        case .closed: terminalError ?? .connectionClosed()
        }
    }

    private func deadline(_ now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        now.advanced(by: settings.requestTimeout)
    }

    // MARK: Connected

    /// The first connect attempt (outside any recovery) succeeded.
    func connected(heartbeat interval: Duration, endpoint: String, now: ContinuousClock.Instant) {
        switch state {
        case .connecting:
            state = .open
            heartbeat.start(interval: interval, now: now)
            emit(.emit(.connected(endpoint: endpoint)))
        case .recovering(var plan):
            guard case .connecting = plan.step else { return }
            heartbeat.start(interval: interval, now: now)
            emit(.emit(.connected(endpoint: endpoint)))
            plan.step = .restoring(makeRestore(endpoint: endpoint))
            state = .recovering(plan)
            advanceRecovery(now: now)
        case .open, .blocked, .closing, .closed:
            break
        }
    }

    // MARK: Commands

    func openChannel(_ shared: ChannelShared, waiter: Waiter, now: ContinuousClock.Instant) {
        if let refusal = requestRefusal {
            freeChannelNumber(shared.number)
            emit(.fail(waiter, refusal))
            return
        }
        let channel = ChannelStateMachine(number: shared.number, shared: shared)
        channels[shared.number] = channel
        channel.enqueue(.open(waiter), expecting: (.channelOpenOk, .channelOpenOk), deadline: deadline(now))
        emit(.send(shared.number, .channelOpen))
    }

    func request(_ shared: ChannelShared, _ request: ChannelRequest, waiter: Waiter, now: ContinuousClock.Instant) {
        if let refusal = requestRefusal {
            emit(.fail(waiter, refusal))
            return
        }
        guard let channel = channel(for: shared), channel.isOpen else {
            emit(.fail(waiter, closedError(shared)))
            return
        }
        // Publishes after the confirm.select on the wire are numbered by the broker.
        if case .confirmSelect = request { channel.enableConfirmMode() }
        channel.enqueue(.request(request, waiter), expecting: request.expectedReplies, deadline: deadline(now))
        emit(.send(channel.number, .request(request)))
    }

    func consume(
        _ shared: ChannelShared, _ request: ConsumeRequest, sink: ConsumerSink, waiter: Waiter, now: ContinuousClock.Instant
    ) {
        let refusal: RabbitMQError?
        if let stateRefusal = requestRefusal {
            refusal = stateRefusal
        } else if let channel = channel(for: shared), channel.isOpen {
            if channel.consumers[request.consumerTag] != nil {
                refusal = RabbitMQError(
                    code: .invalidConfiguration, scope: .none,
                    message: "consumer tag '\(request.consumerTag)' is already in use on channel \(channel.number)")
            } else {
                // Registered now: deliveries may follow consume-ok in the same read.
                channel.addConsumer(request, sink: sink, waiter: waiter)
                channel.enqueue(.consume(tag: request.consumerTag), expecting: (.basicConsumeOk, .basicConsumeOk), deadline: deadline(now))
                emit(.send(channel.number, .basicConsume(request)))
                return
            }
        } else {
            refusal = closedError(shared)
        }
        emit(.finishConsumer(sink, refusal))
        emit(.fail(waiter, refusal!))
    }

    func cancelConsumer(_ shared: ChannelShared, consumerTag tag: String, waiter: Waiter?, now: ContinuousClock.Instant) {
        guard let channel = channel(for: shared), let consumer = channel.consumers[tag] else {
            if let waiter { emit(.succeed(waiter, .ok)) }
            return
        }
        if channel.phase == .closing {
            // The close cancels every consumer of the channel.
            if let waiter { emit(.succeed(waiter, .ok)) }
            return
        }
        switch consumer.state {
        case .dormant:
            // Not on the broker (the connection is down): forget it, so no recovery brings it back.
            forgetConsumer(tag, on: channel, error: nil)
            if let waiter { emit(.succeed(waiter, .ok)) }
        case .registering:
            channel.updateConsumer(tag) { consumer in
                consumer.cancelRequested = true
                if let waiter { consumer.cancelWaiters.append(waiter) }
            }
        case .cancelling:
            channel.updateConsumer(tag) { consumer in
                if case .cancelling(var waiters) = consumer.state, let waiter {
                    waiters.append(waiter)
                    consumer.state = .cancelling(waiters)
                }
            }
        case .active:
            sendCancel(tag, on: channel, waiters: waiter.map { [$0] } ?? [], now: now)
        }
    }

    func sendCancel(_ tag: String, on channel: ChannelStateMachine, waiters: [Waiter], now: ContinuousClock.Instant) {
        channel.updateConsumer(tag) { consumer in
            consumer.state = .cancelling(waiters)
            consumer.cancelRequested = false
            consumer.cancelWaiters = []
        }
        channel.enqueue(.cancel(tag: tag), expecting: (.basicCancelOk, .basicCancelOk), deadline: deadline(now))
        emit(.send(channel.number, .basicCancel(consumerTag: tag)))
    }

    /// An ack, nack or reject: the channel to send it on, or nil when it is dropped. A
    /// settlement for a delivery of an earlier connection (or a channel closed since) is
    /// dropped: the broker requeued the message, and a stale tag would close the new channel
    /// with 406. Settlements still go out while the connection closes, until it sends close.
    @inline(__always)
    func settle(_ shared: ChannelShared, epoch settlementEpoch: UInt64) -> UInt16? {
        guard settlementEpoch == epoch, let channel = channel(for: shared), channel.isOpen else { return nil }
        switch phase {
        case .open, .blocked, .recovering, .closingOpen, .closingBlocked: return channel.number
        case .closingSent, .connecting, .closed: return nil
        }
    }

    func closeChannel(_ shared: ChannelShared, waiter: Waiter, now: ContinuousClock.Instant) {
        guard let channel = channel(for: shared) else {
            emit(.succeed(waiter, .ok))
            return
        }
        if channel.closing != nil {
            channel.addCloseWaiter(waiter)
            return
        }
        switch channel.phase {
        case .open:
            beginClose(channel, error: Self.channelClosedByApplication, graceful: true, waiters: [waiter], now: now)
        case .opening where isConnected:
            // A recovery's channel.open is on the wire: close once it is open, or the number
            // would be reused for a channel the broker still has open.
            channel.beginClosing(.init(error: Self.channelClosedByApplication, graceful: true, waiters: [waiter], afterOpen: true))
            emit(.markChannelClosed(shared, Self.channelClosedByApplication))
        case .opening, .dormant:
            // Nothing on the broker to close.
            finishChannel(channel, error: Self.channelClosedByApplication, graceful: true)
            emit(.succeed(waiter, .ok))
        case .closing:
            channel.addCloseWaiter(waiter)
        }
    }

    /// `close()`: flush, wait (bounded) for outstanding confirms, then the close handshake.
    func close(waiter: Waiter?, now: ContinuousClock.Instant) {
        switch state {
        case .closed:
            if let waiter { emit(.succeed(waiter, .ok)) }
        case .closing(var closing):
            if let waiter { closing.waiters.append(waiter) }
            state = .closing(closing)
        case .connecting:
            terminate(nil, now: now)
            if let waiter { emit(.succeed(waiter, .ok)) }
        case .open:
            beginConnectionClose(waiter: waiter, blocked: nil, now: now)
        case .blocked(let blocked):
            beginConnectionClose(waiter: waiter, blocked: blocked, now: now)
        case .recovering(let plan):
            guard case .restoring = plan.step else {
                // Nothing to close on the broker: end here, gracefully.
                emit(.log(.debug, "closed while recovering", [:]))
                terminate(nil, now: now)
                if let waiter { emit(.succeed(waiter, .ok)) }
                return
            }
            // Connected again but not restored: what the plan has not republished yet fails,
            // and so do the publishes held for its end (nothing would release them now).
            for channel in sortedChannels() where channel.hasRepublish {
                failUnconfirmed(channel.takeRepublish(), on: channel, error: Self.closedByApplication)
            }
            failAllHeld(Self.closedByApplication)
            beginConnectionClose(waiter: waiter, blocked: plan.blocked, now: now)
        }
    }

    private func beginConnectionClose(waiter: Waiter?, blocked: BlockedState?, now: ContinuousClock.Instant) {
        emit(.log(.debug, "closing", [:]))
        state = .closing(Closing(waiters: waiter.map { [$0] } ?? [], deadline: now.advanced(by: settings.closeTimeout), blocked: blocked))
        // From here on new commands fail; the ones already queued are still run.
        emit(.setPhase(.closing))
        sendConnectionCloseIfDrained(now: now)
    }

    func sendConnectionCloseIfDrained(now: ContinuousClock.Instant) {
        guard phase == .closingOpen || phase == .closingBlocked else { return }
        sendConnectionCloseIfDrainedWhileClosing(now: now)
    }

    @inline(never)
    private func sendConnectionCloseIfDrainedWhileClosing(now: ContinuousClock.Instant) {
        guard case .closing(var closing) = state, !closing.sentClose else { return }
        let drained = heldHead == held.count && channels.values.allSatisfy { $0.unconfirmed.isEmpty }
        guard drained || closing.deadline <= now else { return }
        closing.sentClose = true
        state = .closing(closing)
        emit(.send(0, .connectionClose(replyCode: 200, replyText: "Normal shutdown")))
    }

    // MARK: Publishing (hot path)

    /// Where a publish on `shared` goes: sent now, held (blocked, recovering, or behind
    /// publishes held already, so order is kept), or failed.
    @inline(__always)
    func routePublish(_ shared: ChannelShared) -> PublishRoute {
        switch phase {
        case .open, .closingOpen:
            if heldHead < held.count { return .hold }
        case .blocked, .recovering, .closingBlocked:
            return .hold
        case .closingSent:
            return .fail(.connectionClosed("the connection is closing"))
        case .connecting, .closed:
            return .fail(terminalError ?? .connectionClosed())
        }
        guard let channel = channel(for: shared), channel.isOpen else { return .fail(closedError(shared)) }
        return .send(channel)
    }

    /// Records a publish that goes out now on `channel`: in confirm mode it takes the next
    /// sequence number of the window. Returns the number to tag a mandatory publish with.
    @inline(__always)
    func recordPublish(
        on channel: ChannelStateMachine, _ message: OutboundMessage, ticket: ConfirmTicket?, holdsSlot: Bool
    ) -> UInt64? {
        guard channel.confirmMode else { return nil }
        let sequence = channel.unconfirmed.next
        // Recorded before the send: if the connection dies inside it, recovery publishes the
        // message again instead of losing it.
        let keep = message.mandatory || settings.recovery.republishUnconfirmed
        channel.unconfirmed.append(Unconfirmed(ticket: ticket, message: keep ? message : nil, holdsSlot: holdsSlot))
        return message.mandatory ? sequence : nil
    }

    /// The publish could not be encoded (its properties do not fit a frame): take it back.
    func publishRefused(on channel: ChannelStateMachine, recorded: Bool, error: RabbitMQError) {
        guard recorded, let entry = channel.unconfirmed.dropLast() else { return }
        if let ticket = entry.ticket { emit(.resolveTicket(ticket, .failure(error))) }
        if entry.holdsSlot, let shared = channel.shared { emit(.releaseConfirmSlots(shared, 1)) }
    }

    func hold(
        _ shared: ChannelShared, _ message: OutboundMessage, ticket: ConfirmTicket?, holdsSlot: Bool,
        deadline: ContinuousClock.Instant? = nil
    ) {
        held.append(
            Held(shared: shared, message: message, ticket: ticket, holdsSlot: holdsSlot, deadline: deadline.map { PublishDeadline($0) }))
    }

    /// Sends held publishes while nothing holds them any more; drops those whose deadline
    /// has passed (their callers have given up on them).
    func releaseHeld(now: ContinuousClock.Instant) {
        var failed = 0
        while heldHead < held.count {
            let next = held[heldHead]
            let route = routePublishIgnoringHeld(next.shared)
            if case .hold = route { break }
            heldHead += 1
            if let deadline = next.deadline, deadline.instant <= now, case .send = route {
                failed += 1
                emit(.log(.debug, "a held publish passed its deadline; not sent", [LogKey.channel: "\(next.shared.number)"]))
                failPublish(
                    next.shared, ticket: next.ticket, holdsSlot: next.holdsSlot,
                    error: RabbitMQError(code: .timeout, scope: .none, message: "the publish waited past its deadline"))
                continue
            }
            switch route {
            case .send(let channel):
                let tag = recordPublish(on: channel, next.message, ticket: next.ticket, holdsSlot: next.holdsSlot)
                emit(.publish(channel.number, next.message, returnTag: tag, holdsRoom: true))
            case .fail(let error):
                failed += 1
                failPublish(next.shared, ticket: next.ticket, holdsSlot: next.holdsSlot, error: error)
            case .hold:
                break
            }
        }
        if failed > 0 { emit(.releasePublishRoom(failed)) }
        if heldHead == held.count {
            held.removeAll(keepingCapacity: false)
            heldHead = 0
        }
    }

    private func routePublishIgnoringHeld(_ shared: ChannelShared) -> PublishRoute {
        switch phase {
        case .open, .closingOpen: break
        case .blocked, .recovering, .closingBlocked: return .hold
        case .closingSent: return .fail(.connectionClosed("the connection is closing"))
        case .connecting, .closed: return .fail(terminalError ?? .connectionClosed())
        }
        guard let channel = channel(for: shared), channel.isOpen else { return .fail(closedError(shared)) }
        return .send(channel)
    }

    /// A publish that will never be sent: its confirmation fails and its slot is given back.
    func failPublish(_ shared: ChannelShared, ticket: ConfirmTicket?, holdsSlot: Bool, error: RabbitMQError) {
        if let ticket { emit(.resolveTicket(ticket, .failure(error))) }
        if holdsSlot { emit(.releaseConfirmSlots(shared, 1)) }
    }

    private func failAllHeld(_ error: RabbitMQError) {
        let count = held.count - heldHead
        guard count > 0 else { return }
        for entry in held[heldHead...] { failPublish(entry.shared, ticket: entry.ticket, holdsSlot: entry.holdsSlot, error: error) }
        held.removeAll()
        heldHead = 0
        emit(.releasePublishRoom(count))
    }

    // MARK: Confirms (hot path)

    /// `basic.ack` or `basic.nack` for publishes on `channel`: resolves them through
    /// `resolve`; returns how many confirm slots to give back.
    @inline(__always)
    func confirm(
        _ channel: ChannelStateMachine, tag: UInt64, multiple: Bool, acked: Bool,
        now: ContinuousClock.Instant, resolve: (ConfirmTicket, RabbitMQPublishOutcome) -> Void
    ) -> Int {
        let slots = channel.confirm(tag, multiple: multiple, acked: acked, resolve)
        if phase == .closingOpen || phase == .closingBlocked { sendConnectionCloseIfDrained(now: now) }
        return slots
    }

    // MARK: Small helpers

    func sortedChannels() -> [ChannelStateMachine] {
        channels.values.sorted { $0.number < $1.number }
    }

    func failUnconfirmed(_ entries: [Unconfirmed], on channel: ChannelStateMachine, error: RabbitMQError) {
        var slots = 0
        for entry in entries {
            if let ticket = entry.ticket { emit(.resolveTicket(ticket, .failure(error))) }
            if entry.holdsSlot { slots += 1 }
        }
        if slots > 0, let shared = channel.shared { emit(.releaseConfirmSlots(shared, slots)) }
    }

    func removeChannel(_ number: UInt16) {
        channels[number] = nil
    }

    func addChannel(_ channel: ChannelStateMachine) {
        channels[channel.number] = channel
    }

    func recordTopology(_ update: (inout TopologyRegistry) -> Void) {
        update(&registry)
    }

    func setState(_ state: State) {
        self.state = state
    }

    func bumpEpoch() {
        epoch &+= 1
    }

    func allocateInternalChannel() -> UInt16? { allocateChannel() }

    /// The channel is gone: its number is free for the next channel.
    func freeChannelNumber(_ number: UInt16) {
        releaseChannel(number)
        emit(.channelGone(number))
    }

    func postponeDeadlinesAfterBlock(_ blocked: BlockedState, now: ContinuousClock.Instant) {
        let delay = blocked.since.duration(to: now)
        guard delay > .zero else { return }
        for channel in channels.values { channel.postponeDeadlines(by: delay) }
        for index in secretUpdates.indices { secretUpdates[index].deadline += delay }
    }

    func unblocked(now: ContinuousClock.Instant) {
        switch state {
        case .blocked(let blocked):
            postponeDeadlinesAfterBlock(blocked, now: now)
            state = .open
        case .closing(var closing):
            if let blocked = closing.blocked { postponeDeadlinesAfterBlock(blocked, now: now) }
            closing.blocked = nil
            state = .closing(closing)
        case .recovering(var plan):
            if let blocked = plan.blocked { postponeDeadlinesAfterBlock(blocked, now: now) }
            plan.blocked = nil
            state = .recovering(plan)
        default:
            return
        }
        emit(.log(.info, "connection unblocked by the broker", [:]))
        emit(.emit(.unblocked))
        releaseHeld(now: now)
        sendConnectionCloseIfDrained(now: now)
    }

    func blocked(reason: String, now: ContinuousClock.Instant) {
        let blocked = BlockedState(since: now, reason: reason)
        switch state {
        case .open:
            state = .blocked(blocked)
        case .closing(var closing):
            if closing.blocked == nil { closing.blocked = blocked }
            state = .closing(closing)
        case .recovering(var plan):
            if plan.blocked == nil { plan.blocked = blocked }
            state = .recovering(plan)
        default:
            return
        }
        emit(.log(.info, "connection blocked by the broker", ["rabbitmq.reason": reason]))
        emit(.emit(.blocked(reason: reason)))
    }

    var isBlocked: Bool {
        switch phase {
        case .blocked, .closingBlocked: true
        case .recovering: isBlockedWhileRecovering
        default: false
        }
    }

    @inline(never)
    private var isBlockedWhileRecovering: Bool { blocked != nil }

    // MARK: Secret

    /// A new secret (an OAuth2 token refreshed): every later login uses it, and an open
    /// connection sends it to the broker (`connection.update-secret`) when `wire`, the
    /// broker's answer readable. Answered `.applied` when the broker took it, `.nextLogin`
    /// when it was only kept (recovering, not `wire`, or the connection lost before the
    /// broker answered: recovery logs in with it).
    func updateSecret(_ secret: String, reason: String, wire: Bool, waiter: Waiter, now: ContinuousClock.Instant) {
        switch phase {
        case .open, .blocked:
            break
        case .recovering:
            // A restoring connection is logged in with the old secret: tell the broker too.
            if isRestoring && wire { break }
            emit(.storeSecret(secret))
            emit(.succeed(waiter, .secretUpdate(.nextLogin)))
            return
        case .connecting, .closingOpen, .closingBlocked, .closingSent, .closed:
            emit(.fail(waiter, requestRefusal ?? .connectionClosed("the connection is closing")))
            return
        }
        emit(.storeSecret(secret))
        guard wire else {
            emit(.succeed(waiter, .secretUpdate(.nextLogin)))
            return
        }
        emit(.send(0, .connectionUpdateSecret(secret: secret, reason: reason)))
        secretUpdates.append(SecretUpdate(waiter: waiter, deadline: deadline(now)))
    }

    /// `connection.update-secret-ok`: the oldest update sent is applied.
    func secretUpdated() {
        guard !secretUpdates.isEmpty else {
            emit(.log(.debug, "connection.update-secret-ok with no update pending", [:]))
            return
        }
        if let waiter = secretUpdates.removeFirst().waiter { emit(.succeed(waiter, .secretUpdate(.applied))) }
    }

    /// The connection the updates were sent on is gone: the secret stays for the next login.
    func secretUpdatesCarriedOver() {
        for update in secretUpdates {
            if let waiter = update.waiter { emit(.succeed(waiter, .secretUpdate(.nextLogin))) }
        }
        secretUpdates.removeAll()
    }

    /// The earliest deadline of an update whose caller still waits.
    var secretDeadline: ContinuousClock.Instant? {
        var earliest: ContinuousClock.Instant?
        for update in secretUpdates where update.waiter != nil {
            if earliest.map({ update.deadline < $0 }) ?? true { earliest = update.deadline }
        }
        return earliest
    }

    /// Fails the callers whose update the broker has not answered in time (the secret is
    /// kept for later logins all the same); their places stay for the late answers.
    func expireSecretUpdates(now: ContinuousClock.Instant) {
        for index in secretUpdates.indices {
            guard let waiter = secretUpdates[index].waiter, !(now < secretUpdates[index].deadline) else { continue }
            secretUpdates[index].waiter = nil
            emit(.fail(waiter, RabbitMQError(
                code: .timeout, scope: .none,
                message: "the broker did not answer connection.update-secret within \(settings.requestTimeout); the secret is kept for the next login")))
        }
    }

    // MARK: Teardown

    /// The connection is over for good: other threads learn it first (so whoever is
    /// answered next sees a closed connection), then everything waiting is answered, then
    /// the loop stops. `events` go out before `closed`.
    func terminate(_ error: RabbitMQError?, now: ContinuousClock.Instant, events: [RabbitMQConnectionEvent] = []) {
        if case .closed = state { return }
        let closingWaiters: [Waiter] = if case .closing(let closing) = state { closing.waiters } else { [] }
        state = .closed
        terminalError = error ?? Self.closedByApplication
        emit(.terminate(error))
        for event in events { emit(.emit(event)) }
        let failure = error ?? Self.closedByApplication
        for channel in sortedChannels() {
            finishChannel(channel, error: failure, graceful: error == nil, forgetConsumers: false)
        }
        failAllHeld(failure)
        emit(.closeSocket)
        emit(.emit(.closed(error)))
        emit(.finishEvents)
        if error == nil { emit(.log(.info, "closed", [:])) }
        for update in secretUpdates {
            if let waiter = update.waiter { emit(.fail(waiter, failure)) }
        }
        secretUpdates.removeAll()
        for waiter in closingWaiters { emit(.succeed(waiter, .ok)) }
    }
}

/// Heartbeat bookkeeping: when to send one, when to suspect the peer is gone.
struct HeartbeatState: Sendable {
    /// Nil when heartbeats are off.
    private(set) var interval: Duration?
    private(set) var lastSent = ContinuousClock.Instant.now
    private(set) var lastReceived = ContinuousClock.Instant.now
    /// A silence check is under way (the loop asks the kernel).
    var checking = false
    /// Half and twice the interval, computed once: the loop asks for ``sendDue`` and
    /// ``silenceDue`` on every turn, and multiplying or dividing a `Duration` by an integer
    /// goes through generic 128-bit arithmetic.
    private var half = Duration.zero
    private var twice = Duration.zero

    mutating func start(interval: Duration, now: ContinuousClock.Instant) {
        self.interval = interval > .zero ? interval : nil
        half = interval / 2
        twice = interval * 2
        lastSent = now
        lastReceived = now
        checking = false
    }

    mutating func stop() { interval = nil }

    mutating func sent(_ now: ContinuousClock.Instant) { lastSent = now }

    mutating func received(_ now: ContinuousClock.Instant) { lastReceived = now }

    /// Heartbeats are on (the broker and we agreed on an interval).
    var isOn: Bool { interval != nil }

    /// When heartbeats are on (``isOn``): a heartbeat goes out after half an interval
    /// without sending anything. Not optional: `ContinuousClock.Instant` is a resilient type,
    /// and every optional one goes through its value witnesses on the loop's every turn.
    var sendDue: ContinuousClock.Instant { lastSent.advanced(by: half) }

    /// When heartbeats are on and no check is under way (``checking``): the peer is suspect
    /// after two intervals without receiving anything.
    var silenceDue: ContinuousClock.Instant { lastReceived.advanced(by: twice) }
}
