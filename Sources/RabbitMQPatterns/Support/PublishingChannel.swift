import RabbitMQ

/// The confirm-mode channel an exchange or retry-queue handle publishes on, opened again when
/// the broker has closed it.
///
/// The broker closes a channel for one bad publish (an exchange deleted under the handle, a
/// body over its `max_message_size`): that publish fails with the broker's reason, and
/// without this the handle would fail every later publish with the same closed channel. The
/// next use opens a new channel (one opening shared by the callers that arrive meanwhile). A
/// channel the application closed (``close()``), or one lost with its connection, is not
/// replaced: using it fails as before.
final class PublishingChannel: Sendable {
    private struct State {
        var current: RabbitMQChannel
        var reopening: Task<RabbitMQChannel, any Error>?
        var closedByOwner = false
    }

    private let state: LockedValue<State>

    init(_ channel: RabbitMQChannel) {
        state = LockedValue(State(current: channel))
    }

    /// The channel now (possibly one the broker closed, until the next ``usable()``).
    var current: RabbitMQChannel { state.withLock { $0.current } }

    /// The channel to publish on: the current one, or a new one when the broker closed it.
    func usable() async throws -> RabbitMQChannel {
        let (channel, reopening): (RabbitMQChannel?, Task<RabbitMQChannel, any Error>?) = state.withLock { state in
            let current = state.current
            // Only a close the broker sent (it has a reply text): a channel the application
            // closed, through the handle's `channel`, stays closed.
            guard !state.closedByOwner, let reason = current.closeReason, reason.scope == .channel,
                reason.replyText != nil, current.connection.isOpen
            else { return (current, nil) }
            if let reopening = state.reopening { return (nil, reopening) }
            let task = Task { try await Self.open(on: current.connection) }
            state.reopening = task
            return (nil, task)
        }
        if let channel { return channel }
        guard let reopening else { preconditionFailure("either a channel or its reopening") }
        do {
            let opened = try await reopening.value
            let closedMeanwhile = state.withLock { state -> Bool in
                if state.reopening == reopening {
                    state.reopening = nil
                    if !state.closedByOwner { state.current = opened }
                }
                return state.closedByOwner
            }
            if closedMeanwhile {
                try? await opened.close()
                throw RabbitMQError(code: .channelClosed, scope: .channel, message: "the handle was closed")
            }
            return opened
        } catch {
            // The next use tries again.
            state.withLock { state in
                if state.reopening == reopening { state.reopening = nil }
            }
            throw error
        }
    }

    /// Closes the channel for good.
    func close() async throws {
        let channel = state.withLock { state in
            state.closedByOwner = true
            return state.current
        }
        try await channel.close()
    }

    private static func open(on connection: RabbitMQConnection) async throws -> RabbitMQChannel {
        let channel = try await connection.openChannel()
        do {
            try await channel.confirmSelect()
            return channel
        } catch {
            try? await channel.close()
            throw error
        }
    }
}
