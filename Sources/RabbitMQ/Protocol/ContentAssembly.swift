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
    var message: RabbitMQDelivery
    /// -1 until the content header arrives, then the body size it announced.
    var bodySize = -1
    /// Body bytes received so far (counted, so completion never reads the body).
    var received = 0
    /// Its properties could not be decoded (a field table nested too deep): it is refused.
    var undecodable: RabbitMQError?

    var isDiscarding: Bool {
        if case .discard = kind { true } else { false }
    }

    var awaitsHeader: Bool { bodySize < 0 }
}

/// How a content frame moved its assembly on.
enum ContentProgress {
    /// More frames are due.
    case incomplete
    /// The message is whole: hand it on.
    case complete(ContentAssembly)
    /// A frame AMQP does not allow here: the connection is unusable.
    case protocolError(String)
}
