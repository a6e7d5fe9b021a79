/// A content-bearing method (`basic.deliver`, `basic.return`, `basic.get-ok`) whose header
/// and body frames are still arriving on its channel. The message is assembled in a
/// delivery's own (uniquely referenced) storage, so nothing is copied between the frames and
/// the consumer. On a channel that is closing the frames are counted and dropped.
struct ContentAssembly {
    enum Kind {
        case deliver
        case returned(replyCode: UInt16, replyText: String)
        case get
        /// Arrived after our `channel.close`: the broker requeues it; skip its frames.
        case discard
    }

    var kind: Kind
    /// Kept apart from `kind`: asked on every frame, and reading a payload enum copies it.
    let isDiscarding: Bool
    var message: RabbitMQDelivery
    /// -1 until the content header arrives, then the body size it announced.
    var bodySize = -1
    /// Body bytes received so far (counted, so completion never reads the body).
    var received = 0
    /// Its properties could not be decoded (a field table nested too deep): it is refused.
    /// (A flag, not the error: the assembly is moved per frame and must stay small.)
    var undecodable = false

    init(kind: Kind, message: consuming RabbitMQDelivery) {
        self.kind = kind
        if case .discard = kind { isDiscarding = true } else { isDiscarding = false }
        self.message = message
    }

    var awaitsHeader: Bool { bodySize < 0 }

    /// The largest body accepted: 512 MiB, the most RabbitMQ's `max_message_size` allows.
    static var maxBodySize: Int { 512 * 1024 * 1024 }
    /// The most reserved for a body when its header arrives: 1 MiB.
    static var maxReservation: Int { 1024 * 1024 }
}

/// How a content frame moved its assembly on.
enum ContentProgress {
    /// More frames are due.
    case incomplete
    /// The message is whole: it waits in its channel's `content` for
    /// ``ConnectionStateMachine/contentComplete(_:)`` (moved, never copied).
    case complete
    /// A frame AMQP does not allow here: the connection is unusable.
    case protocolError(String)
}
