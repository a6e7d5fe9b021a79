/// What the protocol core asks the I/O loop to do. The loop carries these out in order and
/// decides nothing itself.
enum ConnectionAction {
    /// Send a method on a channel (0: the connection).
    case send(UInt16, OutboundMethod)
    /// Send a heartbeat frame.
    case sendHeartbeat
    /// Publish a message held during an outage or a block, or again after a recovery.
    /// `returnTag` marks a mandatory confirm-mode publish so its `basic.return` can be matched;
    /// `holdsRoom`: it still has room in the publish buffer (a held one), given back once written.
    case publish(UInt16, OutboundMessage, returnTag: UInt64?, holdsRoom: Bool)
    /// Publishes that were held (they kept their place in the publish buffer) are gone:
    /// sent, or failed. Gives their room back.
    case releasePublishRoom(Int)
    /// Answer a caller.
    case succeed(Waiter, ChannelReply)
    case fail(Waiter, RabbitMQError)
    /// End a consumer's sequence: normally (nil), or with an error.
    case finishConsumer(ConsumerSink, RabbitMQError?)
    /// Deliveries from connection epochs before this one, still buffered, are never handed out.
    case dropStaleDeliveries(ConsumerSink, epoch: UInt64)
    case resolveTicket(ConfirmTicket, Result<RabbitMQPublishOutcome, RabbitMQError>)
    case releaseConfirmSlots(ChannelShared, Int)
    /// A mandatory message came back unroutable.
    case returned(ChannelShared, RabbitMQReturnedMessage)
    /// The channel is closed for its users (later calls throw `reason`).
    case markChannelClosed(ChannelShared, RabbitMQError)
    /// A channel number is free again (the core gave it back to the allocator): forget
    /// what was kept per channel.
    case channelGone(UInt16)
    case emit(RabbitMQConnectionEvent)
    /// What callers outside the I/O thread should see (publishers wait while recovering;
    /// new commands fail once closing).
    case setPhase(ConnectionPhase)
    /// Ask the kernel how long the socket has been silent, then report `peerSilence`.
    case checkPeerSilence
    /// Open a socket to an endpoint and log in, then report `connected` or `connectFailed`.
    case connect(attempt: Int)
    /// Log in with this secret (password or token) from now on: recovery's next login uses it.
    case storeSecret(String)
    /// Drop the socket (the connection is lost, or closed).
    case closeSocket
    /// The connection is over: nil after a close the application asked for. New commands
    /// fail from now on; the loop ends once the commands in hand are answered.
    case terminate(RabbitMQError?)
    /// No more events: end every event stream.
    case finishEvents
    /// Log a line (the machine has no logger of its own).
    case log(LogLevel, String, [String: String])
}

/// The connection's phase as other threads see it.
enum ConnectionPhase: Sendable, Equatable {
    case open
    /// Lost; publishers wait (bounded) for recovery, requests fail fast.
    case recovering
    /// `close()` was called: new commands fail; settlements are still accepted.
    case closing
}

/// Levels the machine logs at (mapped to swift-log's by the loop).
enum LogLevel: Sendable, Equatable {
    case trace, debug, info, warning, error
}
