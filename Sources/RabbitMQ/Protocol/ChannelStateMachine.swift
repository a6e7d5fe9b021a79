/// One channel's protocol state: its phase and close handshake, the synchronous requests
/// awaiting replies (matched in order, consume-ok and cancel-ok by tag), the content being
/// assembled, its consumers, its confirm window and what a recovery must restore.
///
/// No I/O, no clock, no C: the connection machine drives it with decoded events and the time,
/// and it appends what must happen to the action list it is given. A class, so the I/O loop can
/// keep the channel of the last frame at hand without hashing (frames come in runs).
final class ChannelStateMachine {
    enum Phase: Equatable {
        /// `channel.open` sent, open-ok not yet received (a first open or a recovery's).
        case opening
        case open
        /// `channel.close` sent: until close-ok every other method is discarded and content is skipped.
        case closing
        /// The connection is down: nothing on the wire until recovery opens it again.
        case dormant
    }

    /// A method sent and waiting for its reply.
    struct Pending {
        enum Kind {
            case open(Waiter?)
            case request(ChannelRequest, Waiter?)
            case consume(tag: String)
            case cancel(tag: String)
            case close
        }
        var kind: Kind
        var expected: (AMQPMethodID, AMQPMethodID)
        var deadline: ContinuousClock.Instant
        /// Sent by the recovery plan, which takes the reply.
        var isRecovery: Bool

        var awaitsConsumerReply: Bool { expected.0 == .basicConsumeOk || expected.0 == .basicCancelOk }
    }

    /// A consumer as the channel knows it: where its deliveries go, how to register it again.
    struct Consumer {
        enum State {
            /// basic.consume sent; the caller (none for a recovery) waits for consume-ok.
            case registering(Waiter?)
            case active
            /// basic.cancel sent; the callers wait for cancel-ok.
            case cancelling([Waiter])
            /// The connection is down; recovery registers it again.
            case dormant
        }
        var request: ConsumeRequest
        var sink: ConsumerSink
        var state: State
        /// `cancel()` was called while it was registering: cancel once consume-ok arrives.
        var cancelWaiters: [Waiter] = []
        var cancelRequested = false
    }

    /// Why the channel is closing or closed, and for whom.
    struct Closing {
        var error: RabbitMQError
        /// Closed by the application: consumers end normally.
        var graceful: Bool
        var waiters: [Waiter]
        /// Asked to close while its `channel.open` was on the wire: close once it is open.
        var afterOpen: Bool = false
    }

    let number: UInt16
    /// The caller-facing half; nil for a channel the recovery plan opened for itself.
    let shared: ChannelShared?
    @exclusivity(unchecked) var phase = Phase.opening
    /// The application has this channel (a recovery re-opens only those).
    private(set) var wasOpened = false
    @exclusivity(unchecked) private var pending: [Pending] = []
    @exclusivity(unchecked) private var pendingHead = 0
    /// Assembled in place as its frames arrive and moved out when complete.
    @exclusivity(unchecked) var content: ContentAssembly?
    @exclusivity(unchecked) private(set) var consumers: [String: Consumer] = [:] {
        didSet { lastConsumer = nil }
    }
    /// The consumer of the last delivery: a busy channel delivers to the same one again and
    /// again, so the tag is compared (usually by identity) instead of hashed.
    @exclusivity(unchecked) private var lastConsumer: (tag: String, sink: ConsumerSink)?
    /// The last `basic.qos` values the broker accepted, per consumer and per channel.
    private(set) var prefetch: (perConsumer: UInt16?, global: UInt16?) = (nil, nil)
    @exclusivity(unchecked) private(set) var confirmMode = false
    @exclusivity(unchecked) var unconfirmed = UnconfirmedWindow()
    /// What the application's acknowledgements settled, for the consumer counters.
    @exclusivity(unchecked) var settlements = SettlementTally()
    /// Unconfirmed publishes of a lost connection, in order, to publish again after recovery.
    private(set) var republish: [Unconfirmed] = []
    private var republishHead = 0
    private(set) var closing: Closing?

    init(number: UInt16, shared: ChannelShared?) {
        self.number = number
        self.shared = shared
    }

    var isInternal: Bool { shared == nil }
    var isOpen: Bool { phase == .open }

    // MARK: Requests

    var hasPending: Bool { pendingHead < pending.count }
    var pendingCount: Int { pending.count - pendingHead }
    var head: Pending? { pendingHead < pending.count ? pending[pendingHead] : nil }

    func enqueue(_ kind: Pending.Kind, expecting expected: (AMQPMethodID, AMQPMethodID), deadline: ContinuousClock.Instant, isRecovery: Bool = false) {
        pending.append(Pending(kind: kind, expected: expected, deadline: deadline, isRecovery: isRecovery))
    }

    /// Takes the request that `method` answers. RabbitMQ answers a channel's synchronous
    /// methods in order, with one exception: a classic queue's process sends
    /// basic.consume-ok and basic.cancel-ok itself, so they can trail the replies to later
    /// methods (a passive queue.declare sent right after a basic.cancel is often answered
    /// first). Those two are matched by consumer tag; other replies may overtake them.
    func takeRequest(answeredBy method: AMQPMethodID, consumerTag: String?) -> Pending? {
        var index = pendingHead
        while index < pending.count {
            let entry = pending[index]
            let expects = entry.expected.0 == method || entry.expected.1 == method
            if let consumerTag {
                if expects {
                    switch entry.kind {
                    case .consume(let tag), .cancel(let tag):
                        if tag == consumerTag { return removePending(at: index) }
                    default:
                        break
                    }
                }
            } else {
                if expects { return removePending(at: index) }
                guard entry.awaitsConsumerReply else { return nil }
            }
            index += 1
        }
        return nil
    }

    /// The basic.get that a basic.get-ok answers: its auto-ack flag and caller. (Not the
    /// whole request: its deadline's type has a size known only at run time, which would
    /// cost the delivery path, where this is inlined, a metadata lookup per message.)
    @inline(never)
    func takeGetRequest() -> (noAck: Bool, waiter: Waiter?)? {
        guard let pending = takeRequest(answeredBy: .basicGetOk, consumerTag: nil),
            case .request(.basicGet(_, let noAck), let waiter) = pending.kind
        else { return nil }
        return (noAck, waiter)
    }

    private func removePending(at index: Int) -> Pending {
        let entry = pending[index]
        if index == pendingHead {
            pendingHead += 1
            if pendingHead == pending.count {
                pending.removeAll(keepingCapacity: true)
                pendingHead = 0
            }
        } else {
            pending.remove(at: index)
        }
        return entry
    }

    /// The indices of the application requests in flight that `matches` picks.
    func applicationRequests(where matches: (ChannelRequest) -> Bool) -> [Int] {
        (pendingHead..<pending.count).filter { index in
            guard !pending[index].isRecovery, case .request(let request, _) = pending[index].kind else { return false }
            return matches(request)
        }
    }

    /// Takes out the application request at `index` (from ``applicationRequests(where:)``).
    func takeApplicationRequest(at index: Int) -> (ChannelRequest, Waiter?)? {
        guard case .request(let request, let waiter) = removePending(at: index).kind else { return nil }
        return (request, waiter)
    }

    /// Forgets the global prefetch, so that recovery does not set it again.
    func forgetGlobalQos() { prefetch.global = nil }

    func takeAllPending() -> [Pending] {
        let rest = Array(pending[pendingHead...])
        pending.removeAll()
        pendingHead = 0
        return rest
    }

    /// A request of the recovery plan waits for its reply here.
    var hasRecoveryRequest: Bool {
        pending[pendingHead...].contains { $0.isRecovery }
    }

    /// The earliest deadline of a request on this channel.
    var earliestDeadline: ContinuousClock.Instant? {
        hasPending ? earliestPendingDeadline : nil
    }

    /// ``earliestDeadline`` without the optional, for the loop's per-turn checks; only
    /// when ``hasPending``.
    var earliestPendingDeadline: ContinuousClock.Instant {
        var earliest = pending[pendingHead].deadline
        for index in (pendingHead + 1)..<pending.count where pending[index].deadline < earliest {
            earliest = pending[index].deadline
        }
        return earliest
    }

    /// Moves every request deadline later by `delay` (the connection was blocked meanwhile).
    func postponeDeadlines(by delay: Duration) {
        for index in pendingHead..<pending.count { pending[index].deadline += delay }
    }

    // MARK: Opening

    /// The application's channel.open was answered.
    func opened() {
        phase = .open
        wasOpened = true
    }

    func reopening() {
        phase = .opening
    }

    // MARK: Settings

    func recordQos(prefetchCount: UInt16, global: Bool) {
        if global { prefetch.global = prefetchCount } else { prefetch.perConsumer = prefetchCount }
    }

    func enableConfirmMode() { confirmMode = true }

    // MARK: Consumers

    func addConsumer(_ request: ConsumeRequest, sink: ConsumerSink, waiter: Waiter?) {
        consumers[request.consumerTag] = Consumer(request: request, sink: sink, state: .registering(waiter))
    }

    func updateConsumer(_ tag: String, _ body: (inout Consumer) -> Void) {
        guard var consumer = consumers[tag] else { return }
        body(&consumer)
        consumers[tag] = consumer
    }

    @discardableResult
    func removeConsumer(_ tag: String) -> Consumer? {
        consumers.removeValue(forKey: tag)
    }

    func removeAllConsumers() -> [Consumer] {
        let all = Array(consumers.values)
        consumers.removeAll()
        return all
    }

    /// The sink of an active (or cancelling) consumer, for a delivery.
    @inline(__always)
    func sink(forConsumer tag: String) -> ConsumerSink? {
        if let lastConsumer, lastConsumer.tag == tag { return lastConsumer.sink }
        guard let sink = consumers[tag]?.sink else { return nil }
        lastConsumer = (tag, sink)
        return sink
    }

    /// Points consumers of a renamed server-named queue at its new name.
    func renameQueue(from old: String, to new: String) {
        for (tag, var consumer) in consumers where consumer.request.queue == old {
            consumer.request.queue = new
            consumers[tag] = consumer
        }
    }

    // MARK: Content

    /// A content-bearing method arrived. On a closing channel its frames will be skipped.
    @inline(__always)
    func beginContent(_ kind: ContentAssembly.Kind, _ message: consuming RabbitMQDelivery) -> String? {
        guard content == nil else { return "a content method on channel \(number) before the previous content ended" }
        content = ContentAssembly(kind: phase == .closing ? .discard : kind, message: message)
        return nil
    }

    /// The content header: `properties` is nil when the frame had none (or when discarding);
    /// `undecodable` when they could not be decoded. A body larger than RabbitMQ ever sends
    /// (``ContentAssembly/maxBodySize``) is a protocol error. Changed in place: the delivery stays
    /// uniquely referenced, so the body is appended to it without a copy.
    @inline(__always)
    func contentHeader(bodySize announced: UInt64, properties: RabbitMQProperties?, undecodable: Bool = false) -> ContentProgress {
        guard content?.bodySize == -1 else { return .protocolError("unexpected content header on channel \(number)") }
        // The size is the broker's word: refuse what RabbitMQ never sends before it is
        // converted or reserved.
        guard announced <= UInt64(ContentAssembly.maxBodySize) else {
            return .protocolError(
                "a content header on channel \(number) announces a body of \(announced) bytes; RabbitMQ sends at most \(ContentAssembly.maxBodySize)")
        }
        let bodySize = Int(announced)
        if let properties { content!.message.properties = properties }
        if undecodable { content!.undecodable = true }
        if bodySize == 0 { return .complete }
        content!.bodySize = bodySize
        // Reserved once, for the whole body up to 1 MiB (the generic array initialisers cost
        // a metadata lookup of a few hundred instructions per message); a larger one grows as
        // it arrives, so a header alone cannot make the client reserve more.
        if !content!.isDiscarding { content!.message.body.reserveCapacity(Swift.min(bodySize, ContentAssembly.maxReservation)) }
        return .incomplete
    }

    /// A body frame.
    @inline(__always)
    func contentBody(_ fragment: UnsafeRawBufferPointer) -> ContentProgress {
        guard let size = content?.bodySize, size >= 0 else { return .protocolError("unexpected content body on channel \(number)") }
        if fragment.count > 0, !content!.isDiscarding { content!.message.body.append(contentsOf: fragment) }
        content!.received += fragment.count
        return content!.received >= size ? .complete : .incomplete
    }

    // MARK: Confirms

    /// Resolves the entries an ack or nack covers, oldest first; returns how many held a slot.
    @inline(__always)
    func confirm(
        _ tag: UInt64, multiple: Bool, acked: Bool, _ resolve: (ConfirmTicket, RabbitMQPublishOutcome) -> Void
    ) -> Int {
        var slots = 0
        unconfirmed.remove(from: multiple ? 0 : tag, through: tag) { entry in
            if entry.holdsSlot { slots += 1 }
            guard let ticket = entry.ticket else { return }
            let outcome: RabbitMQPublishOutcome =
                if let returned = entry.returned { .returned(returned) } else if acked { .acked } else { .nacked }
            resolve(ticket, outcome)
        }
        return slots
    }

    /// Attaches a `basic.return` to the publish it belongs to: by the sequence number the
    /// publish carried in a header, else the oldest unconfirmed mandatory publish to the
    /// same exchange and routing key (a return always precedes the ack of its publish).
    func attachReturn(_ message: RabbitMQReturnedMessage, sequence: UInt64?) -> Bool {
        if let sequence, var entry = unconfirmed[sequence], entry.returned == nil {
            entry.returned = message
            unconfirmed[sequence] = entry
            return true
        }
        var candidate = unconfirmed.oldest
        while candidate < unconfirmed.next {
            if var entry = unconfirmed[candidate], entry.returned == nil, let sent = entry.message, sent.mandatory,
                sent.exchange == message.exchange, sent.routingKey == message.routingKey
            {
                entry.returned = message
                unconfirmed[candidate] = entry
                return true
            }
            candidate += 1
        }
        return false
    }

    // MARK: Outage

    /// The connection is gone: keep what recovery needs. Returns the requests that were in
    /// flight (their callers are answered by the connection machine).
    func suspend(republishUnconfirmed: Bool) -> (pending: [Pending], unconfirmed: [Unconfirmed]) {
        content = nil
        phase = .dormant
        let inFlight = takeAllPending()
        let lost = unconfirmed.takeAll()
        if republishUnconfirmed {
            // Anything republished already and unconfirmed again goes back in front of what
            // was not republished yet: the order of the original publishes is kept.
            republish = lost + republish[republishHead...]
            republishHead = 0
            return (inFlight, [])
        }
        return (inFlight, lost)
    }

    /// The next message to publish again after a recovery, in order; nil when done.
    func nextRepublish() -> Unconfirmed? {
        guard republishHead < republish.count else {
            if !republish.isEmpty {
                republish.removeAll()
                republishHead = 0
            }
            return nil
        }
        let entry = republish[republishHead]
        republishHead += 1
        return entry
    }

    var hasRepublish: Bool { republishHead < republish.count }

    /// Everything left to publish again (the channel is gone).
    func takeRepublish() -> [Unconfirmed] {
        let rest = Array(republish[republishHead...])
        republish.removeAll()
        republishHead = 0
        return rest
    }

    // MARK: Closing

    func beginClosing(_ closing: Closing) {
        self.closing = closing
        if !closing.afterOpen { phase = .closing }
    }

    func addCloseWaiter(_ waiter: Waiter) {
        closing?.waiters.append(waiter)
    }
}
