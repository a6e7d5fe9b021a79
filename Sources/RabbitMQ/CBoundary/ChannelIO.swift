import CRabbitMQ

/// The I/O thread's view of one channel: its request queue, content assembly, consumers and
/// confirm window. Touched only by the I/O thread.
final class ChannelIO {
    enum Phase { case opening, open, closing }

    /// A request sent to the broker and waiting for its reply. RabbitMQ answers the
    /// synchronous methods of a channel in order, so a FIFO matches replies to requests.
    struct Pending {
        enum Kind {
            case open(CheckedContinuation<Void, any Error>)
            case request(ChannelRequest, CheckedContinuation<ChannelReply, any Error>)
            case consume(String, CheckedContinuation<ChannelReply, any Error>)
            case cancel(String, CheckedContinuation<ChannelReply, any Error>?)
            case close
            /// A request the I/O thread makes itself (recovery) and waits for in place.
            case `internal`(ReplyBox)
        }
        var kind: Kind
        var expected: (amqp_method_number_t, amqp_method_number_t)
        var deadline: ContinuousClock.Instant

        var awaitsConsumerReply: Bool {
            expected.0 == AMQP_BASIC_CONSUME_OK_METHOD || expected.0 == AMQP_BASIC_CANCEL_OK_METHOD
        }
    }

    /// A content-bearing method whose header and body frames are still arriving. The message
    /// is assembled in a delivery's own (uniquely referenced) storage, so nothing is copied
    /// between the frames and the consumer.
    struct Content {
        enum Kind {
            case deliver
            case returned(replyCode: UInt16, replyText: String)
            case get
        }
        var kind: Kind
        var message: RabbitMQDelivery
        /// -1 until the content header arrives, then the body size it announced.
        var bodySize = -1
        /// Body bytes received so far (counted, so completion never reads the body).
        var received = 0
    }

    /// A publish awaiting its confirm. The message is kept to publish it again after a
    /// recovery, and to match a `basic.return` (which carries no sequence number) to it.
    struct Unconfirmed {
        var ticket: ConfirmTicket?
        var message: OutboundMessage?
        var returned: RabbitMQReturnedMessage?
    }

    /// A consumer as recorded for recovery: where its deliveries go and how to register it again.
    struct Consumer {
        var sink: ConsumerSink
        var request: ConsumeRequest
    }

    let shared: ChannelShared
    var phase = Phase.opening {
        didSet { if phase == .open { wasOpened = true } }
    }
    /// Whether the application ever got this channel (a recovery re-opens only those).
    private(set) var wasOpened = false
    var pending: [Pending] = []
    var pendingHead = 0
    /// Assembled in place as its frames arrive and moved out when complete.
    @exclusivity(unchecked) var content: Content?
    var consumers: [String: Consumer] = [:] {
        didSet { lastConsumer = nil }
    }
    /// The consumer of the last delivery: a busy channel delivers to the same one again and
    /// again, so the tag is compared (usually by identity) instead of hashed.
    @exclusivity(unchecked) private var lastConsumer: (tag: String, sink: ConsumerSink)?
    /// The last strings of a basic.deliver, reused while the next one carries the same bytes:
    /// no String is made per delivery for the tag, exchange and routing key.
    @exclusivity(unchecked) var recentTag = ""
    @exclusivity(unchecked) var recentExchange = ""
    @exclusivity(unchecked) var recentRoutingKey = ""
    /// The last content properties (without headers) and their flags, shared by the next
    /// message that carries the same values.
    @exclusivity(unchecked) var recentProperties = RabbitMQProperties()
    @exclusivity(unchecked) var recentPropertiesFlags: amqp_flags_t = 0
    /// The last `basic.qos` the broker accepted, re-applied after recovery.
    var prefetch: (count: UInt16, global: Bool)?
    /// Unconfirmed publishes of a lost connection, in order, to publish again after recovery.
    var republish: [Unconfirmed] = []
    /// A channel the I/O thread opened for itself (topology recovery); never user-visible.
    let isInternal: Bool
    var confirmMode = false
    @exclusivity(unchecked) var unconfirmed = UnconfirmedWindow()
    var closeWaiters: [CheckedContinuation<Void, any Error>] = []

    init(shared: ChannelShared, isInternal: Bool = false) {
        self.shared = shared
        self.isInternal = isInternal
    }

    var number: UInt16 { shared.number }

    @inline(__always)
    func sink(forConsumer tag: String) -> ConsumerSink? {
        if let lastConsumer, lastConsumer.tag == tag { return lastConsumer.sink }
        guard let sink = consumers[tag]?.sink else { return nil }
        lastConsumer = (tag, sink)
        return sink
    }

    var head: Pending? { pendingHead < pending.count ? pending[pendingHead] : nil }

    func popHead() -> Pending? {
        guard pendingHead < pending.count else { return nil }
        let head = pending[pendingHead]
        pendingHead += 1
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingHead = 0
        }
        return head
    }

    /// Takes the request that `method` answers. RabbitMQ answers a channel's synchronous
    /// methods in order, with one exception: a classic queue's process sends
    /// basic.consume-ok and basic.cancel-ok itself, so they can trail the replies to later
    /// methods (a passive queue.declare sent right after a basic.cancel is often answered
    /// first). Those two are matched by consumer tag; other replies may overtake them.
    func takeRequest(answeredBy method: amqp_method_number_t, consumerTag: String?) -> Pending? {
        var index = pendingHead
        while index < pending.count {
            let entry = pending[index]
            let expects = entry.expected.0 == method || entry.expected.1 == method
            if let consumerTag {
                if expects {
                    switch entry.kind {
                    case .consume(let tag, _), .cancel(let tag, _):
                        if tag == consumerTag { return removePending(at: index) }
                    case .internal:
                        return removePending(at: index)
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

    private func removePending(at index: Int) -> Pending {
        if index == pendingHead { return popHead()! }
        return pending.remove(at: index)
    }

    func takeAllPending() -> [Pending] {
        let rest = Array(pending[pendingHead...])
        pending.removeAll()
        pendingHead = 0
        return rest
    }
}

/// Where a reply to an internal request lands (I/O thread only).
final class ReplyBox {
    var result: Result<ChannelReply, RabbitMQError>?
}

/// Publishes awaiting their confirms, by sequence number. Sequence numbers are consecutive,
/// so this is an array indexed from the oldest one still pending: no hashing, and the slots
/// are reused as the window moves.
struct UnconfirmedWindow {
    typealias Entry = ChannelIO.Unconfirmed

    private var slots: [Entry?] = []
    /// Index in `slots` of the oldest sequence number kept.
    private var head = 0
    /// The sequence number of `slots[head]`.
    private(set) var oldest: UInt64 = 1
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Adds the entry of the next sequence number (the one after every entry added so far).
    mutating func append(_ entry: Entry) {
        slots.append(entry)
        count += 1
    }

    /// The sequence number the next `append` stands for.
    var next: UInt64 { oldest + UInt64(slots.count - head) }

    subscript(sequence: UInt64) -> Entry? {
        get {
            guard sequence >= oldest, sequence < next else { return nil }
            return slots[head + Int(sequence - oldest)]
        }
        set {
            guard sequence >= oldest, sequence < next else { return }
            let index = head + Int(sequence - oldest)
            if slots[index] == nil, newValue != nil { count += 1 }
            if slots[index] != nil, newValue == nil { count -= 1 }
            slots[index] = newValue
        }
    }

    /// Removes and returns the entries from `first` through `last`, oldest first.
    mutating func remove(from first: UInt64, through last: UInt64, _ body: (Entry) -> Void) {
        let low = max(first, oldest)
        let high = min(last, next &- 1)
        if low <= high {
            for index in (head + Int(low - oldest))...(head + Int(high - oldest)) {
                var taken: Entry? = nil
                swap(&taken, &slots[index])  // moved out, not copied
                guard let entry = taken else { continue }
                count -= 1
                body(entry)
            }
        }
        // Move past the confirmed front; drop the dead prefix once it is large.
        while head < slots.count, slots[head] == nil {
            head += 1
            oldest += 1
        }
        if head == slots.count {
            slots.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024, head * 2 >= slots.count {
            slots.removeFirst(head)
            head = 0
        }
    }

    /// Takes back the entry added last (its publish never left).
    mutating func dropLast() -> Entry? {
        guard slots.count > head, let entry = slots.removeLast() else { return nil }
        count -= 1
        return entry
    }

    /// Everything still pending, oldest first; the window starts again at sequence number 1.
    mutating func takeAll() -> [Entry] {
        let entries = slots[head...].compactMap { $0 }
        self = UnconfirmedWindow()
        return entries
    }
}
