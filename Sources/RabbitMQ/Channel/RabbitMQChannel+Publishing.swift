extension RabbitMQChannel {
    /// Publishes a message without waiting for the broker.
    ///
    /// Returns once the message is queued for the connection's I/O thread; suspends while
    /// ``RabbitMQConfiguration/publishBufferLimit`` publishes are already waiting, or while the
    /// confirm window is full on a confirm-mode channel. Messages reach the broker in the
    /// order they were published on this channel. An unroutable `mandatory` message comes
    /// back on ``returnedMessages()``.
    ///
    /// - Throws: ``RabbitMQError`` when the channel or connection is closed.
    public func publish(
        _ body: [UInt8], exchange: String = "", routingKey: String,
        properties: RabbitMQProperties = RabbitMQProperties(), mandatory: Bool = false
    ) async throws {
        // The usual case queues the message without suspending. Everything happens in a
        // synchronous call that hands back at most one reference: an async function's locals
        // that live across an await are allocated per call, which a message must not pay for.
        if let pending = try admit(body, exchange, routingKey, properties, mandatory, ticket: nil) {
            try await pending.complete(deadline: nil)
        }
    }

    /// Publishes a UTF-8 string body. See ``publish(_:exchange:routingKey:properties:mandatory:)-([UInt8],_,_,_,_)``.
    public func publish(
        _ body: String, exchange: String = "", routingKey: String,
        properties: RabbitMQProperties = RabbitMQProperties(), mandatory: Bool = false
    ) async throws {
        try await publish(
            Array(body.utf8), exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
    }

    /// Puts the channel in confirm mode: from now on the broker acknowledges every publish.
    ///
    /// - Parameter maxOutstanding: How many publishes may await their confirmation at once;
    ///   a publisher suspends when the window is full, so memory stays bounded. Default 1000.
    public func confirmSelect(maxOutstanding: Int = 1000) async throws {
        precondition(maxOutstanding > 0, "maxOutstanding must be positive")
        _ = try await request(.confirmSelect)
        shared.enableConfirms(capacity: maxOutstanding)
    }

    /// Publishes a message on a confirm-mode channel and returns a handle on its confirmation.
    ///
    /// Suspends only while the confirm window is full. Await ``RabbitMQConfirmation/outcome()``
    /// for the broker's answer: `.acked`, `.nacked`, or `.returned` for a mandatory message
    /// that could not be routed.
    ///
    /// - Throws: ``RabbitMQError`` when the channel is not in confirm mode or is closed.
    public func publishWithConfirm(
        _ body: [UInt8], exchange: String = "", routingKey: String,
        properties: RabbitMQProperties = RabbitMQProperties(), mandatory: Bool = false
    ) async throws -> RabbitMQConfirmation {
        let ticket = ConfirmTicket()
        if let pending = try admit(body, exchange, routingKey, properties, mandatory, ticket: ticket) {
            try await pending.complete(deadline: nil)
        }
        return RabbitMQConfirmation(ticket: ticket)
    }

    /// Publishes on a confirm-mode channel and waits for the broker's answer.
    @discardableResult
    public func publishAndWaitForConfirm(
        _ body: [UInt8], exchange: String = "", routingKey: String,
        properties: RabbitMQProperties = RabbitMQProperties(), mandatory: Bool = false
    ) async throws -> RabbitMQPublishOutcome {
        try await publishWithConfirm(
            body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory
        ).outcome()
    }

    /// Messages the broker returned as unroutable (`mandatory` publishes), for this channel.
    /// Each call makes a new subscriber; it buffers the newest 1024.
    public func returnedMessages() -> AsyncStream<RabbitMQReturnedMessage> {
        shared.makeReturnStream()
    }

    /// For this package's own modules (the RPC client): a publish that waits (for room, for
    /// recovery) at most until `deadline`, then fails with `timeout`, so a call's timeout also
    /// covers sending its request.
    package func publish(
        _ body: [UInt8], exchange: String = "", routingKey: String, properties: RabbitMQProperties, mandatory: Bool,
        deadline: ContinuousClock.Instant
    ) async throws {
        let before = ConnectionStateMachine.PublishDeadline(deadline)
        if let pending = try admit(body, exchange, routingKey, properties, mandatory, ticket: nil, before: before) {
            try await pending.complete(deadline: deadline)
        }
    }

    /// A publish on a connection with a tracer (``PendingPublish`` calls it): ``tracedPublish(_:exchange:routingKey:properties:bodySize:send:)``
    /// around the untraced publish, given the headers with the trace context in them.
    @inline(never)
    private func publishTraced(
        _ tracing: ConnectionTracing, _ body: [UInt8], _ exchange: String, _ routingKey: String,
        _ properties: RabbitMQProperties, _ mandatory: Bool, ticket: ConfirmTicket? = nil,
        before: ConnectionStateMachine.PublishDeadline? = nil, deadline: ContinuousClock.Instant? = nil
    ) async throws {
        try await tracedPublish(
            tracing, exchange: exchange, routingKey: routingKey, properties: properties, bodySize: body.count
        ) { properties in
            if let pending = try admit(
                body, exchange, routingKey, properties, mandatory, ticket: ticket, before: before, traced: true)
            {
                try await pending.complete(deadline: deadline)
            }
        }
    }

    /// A publish that has to wait (for a confirm slot, for room in the buffer, for recovery),
    /// or only to yield, or to be traced: a heap object only on those paths, so the fast path
    /// stays small. The traced path goes through here, and not through a branch in the public
    /// functions, because a second `await` there made every untraced publish's async frame
    /// dearer (callgrind: about 100 more instructions a message).
    private final class PendingPublish: Sendable {
        /// A publisher that never has to wait yields now and then (see ``ChannelShared``).
        static let yield = PendingPublish(channel: nil, message: .placeholder, ticket: nil, command: nil, before: nil)

        let channel: RabbitMQChannel?
        let message: OutboundMessage
        let ticket: ConfirmTicket?
        /// Nil until it has a confirm slot (a confirming channel's window was full).
        let command: Command?
        let before: ConnectionStateMachine.PublishDeadline?
        /// Set when the connection has a tracer: the whole publish is still to do, traced.
        let tracing: ConnectionTracing?

        init(
            channel: RabbitMQChannel?, message: OutboundMessage, ticket: ConfirmTicket?, command: Command?,
            before: ConnectionStateMachine.PublishDeadline?, tracing: ConnectionTracing? = nil
        ) {
            self.channel = channel
            self.message = message
            self.ticket = ticket
            self.command = command
            self.before = before
            self.tracing = tracing
        }

        func complete(deadline: ContinuousClock.Instant?) async throws {
            guard let channel else {
                await Task.yield()
                return
            }
            if let tracing {
                try await channel.publishTraced(
                    tracing, message.body, message.exchange, message.routingKey, message.properties, message.mandatory,
                    ticket: ticket, before: before, deadline: deadline)
                return
            }
            if let command {
                try await channel.submitWaitingForRoom(command, confirming: command.holdsSlot, deadline: deadline)
                return
            }
            try await channel.shared.reserveConfirmSlot()
            let command = before.map { Command.publishBefore(channel.shared, message, holdsSlot: true, $0) }
                ?? .publish(channel.shared, message, ticket, holdsSlot: true)
            try await channel.submitWaitingForRoom(command, confirming: true, deadline: deadline)
        }
    }

    /// The fast path, synchronous: validates, takes a confirm slot and room in the buffer,
    /// and queues the message, in two short critical sections, when there is room. Returns
    /// what is left to do, nil for nothing.
    @inline(never)
    private func admit(
        _ body: [UInt8], _ exchange: String, _ routingKey: String, _ properties: RabbitMQProperties, _ mandatory: Bool,
        ticket: ConfirmTicket?, before: ConnectionStateMachine.PublishDeadline? = nil, traced: Bool = false
    ) throws(RabbitMQError) -> PendingPublish? {
        if !traced, let tracing = connection.tracing {
            return PendingPublish(
                channel: self,
                message: OutboundMessage(
                    body: body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory),
                ticket: ticket, command: nil, before: before, tracing: tracing)
        }
        let message = OutboundMessage(body: body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
        try message.validate()
        try message.validateHeaders { shared.frameMax }
        guard let admission = try shared.tryAdmitPublish() else {
            return PendingPublish(channel: self, message: message, ticket: ticket, command: nil, before: before)
        }
        // Admission says whether the channel confirms: no separate lock to ask first
        // (confirm mode, once selected, is never switched off).
        if ticket != nil && !admission.confirming {
            throw RabbitMQError(code: .invalidConfiguration, message: "call confirmSelect() before publishWithConfirm")
        }
        let command =
            if let before { Command.publishBefore(shared, message, holdsSlot: admission.confirming, before) } else {
                Command.publish(shared, message, ticket, holdsSlot: admission.confirming)
            }
        let queued: Bool
        do {
            queued = try shared.core.trySubmitPublish(command)
        } catch {
            if admission.confirming { shared.releaseConfirmSlots(1) }
            throw error
        }
        if queued { return admission.shouldYield ? .yield : nil }
        return PendingPublish(channel: self, message: .placeholder, ticket: ticket, command: command, before: before)
    }

    /// The slow path: waits for room in the buffer (or for recovery), then queues `command`.
    fileprivate func submitWaitingForRoom(_ command: Command, confirming: Bool, deadline: ContinuousClock.Instant?) async throws {
        do {
            try await shared.core.reservePublish(deadline: deadline)
        } catch {
            if confirming { shared.releaseConfirmSlots(1) }
            throw error
        }
        do {
            try shared.core.submit(command)
        } catch {
            shared.core.releasePublishes(1)
            if confirming { shared.releaseConfirmSlots(1) }
            throw error
        }
    }
}
