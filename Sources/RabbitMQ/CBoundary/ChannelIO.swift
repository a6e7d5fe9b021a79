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
        }
        var kind: Kind
        var expected: (amqp_method_number_t, amqp_method_number_t)
        var deadline: ContinuousClock.Instant
    }

    /// A content-bearing method whose header and body frames are still arriving.
    struct Content {
        enum Kind {
            case deliver(consumerTag: String, deliveryTag: UInt64, redelivered: Bool)
            case returned(replyCode: UInt16, replyText: String)
            case get(deliveryTag: UInt64, redelivered: Bool, messageCount: UInt32)
        }
        var kind: Kind
        var exchange: String
        var routingKey: String
        var properties = RabbitMQProperties()
        var bodySize: Int = -1
        var body: [UInt8] = []
    }

    /// A publish awaiting its confirm; the message is kept only for mandatory publishes,
    /// to match a `basic.return` (which carries no sequence number) to it.
    struct Unconfirmed {
        var ticket: ConfirmTicket?
        var mandatory: OutboundMessage?
        var returned: RabbitMQReturnedMessage?
    }

    let shared: ChannelShared
    var phase = Phase.opening
    var pending: [Pending] = []
    var pendingHead = 0
    var content: Content?
    var consumers: [String: ConsumerSink] = [:]
    var confirmMode = false
    var nextPublishSequence: UInt64 = 1
    var unconfirmed: [UInt64: Unconfirmed] = [:]
    var oldestUnconfirmed: UInt64 = 1
    var closeWaiters: [CheckedContinuation<Void, any Error>] = []

    init(shared: ChannelShared) {
        self.shared = shared
    }

    var number: UInt16 { shared.number }

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

    func takeAllPending() -> [Pending] {
        let rest = Array(pending[pendingHead...])
        pending.removeAll()
        pendingHead = 0
        return rest
    }
}
