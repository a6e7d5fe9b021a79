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
        let message = OutboundMessage(
            body: body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
        try await enqueue(message, ticket: nil)
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
        let message = OutboundMessage(
            body: body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
        try await enqueue(message, ticket: ticket)
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
        let message = OutboundMessage(
            body: body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
        try await enqueue(message, ticket: nil, deadline: deadline)
    }

    @inline(__always)
    private func enqueue(_ message: OutboundMessage, ticket: ConfirmTicket?, deadline: ContinuousClock.Instant? = nil) async throws {
        try message.validate()
        try message.validateHeaders {
            let frameMax = shared.core.negotiated.frameMax
            return frameMax > 0 ? frameMax : 131_072
        }
        // Fast path (room in the window and in the buffer): two short locks, no suspension.
        if let admission = try shared.tryAdmitPublish() {
            // Admission says whether the channel confirms: no separate lock to ask first
            // (confirm mode, once selected, is never switched off).
            if ticket != nil && !admission.confirming {
                throw RabbitMQError(code: .invalidConfiguration, message: "call confirmSelect() before publishWithConfirm")
            }
            let command = Command.publish(shared, message, ticket, holdsSlot: admission.confirming)
            let queued: Bool
            do {
                queued = try shared.core.trySubmitPublish(command)
            } catch {
                if admission.confirming { shared.releaseConfirmSlots(1) }
                throw error
            }
            if !queued {
                try await submitWaitingForRoom(command, confirming: admission.confirming, deadline: deadline)
            } else if admission.shouldYield {
                await Task.yield()
            }
            return
        }
        // The confirm window is full (only a confirming channel has one): wait for a slot.
        try await shared.reserveConfirmSlot()
        try await submitWaitingForRoom(
            Command.publish(shared, message, ticket, holdsSlot: true), confirming: true, deadline: deadline)
    }

    /// The slow path: waits for room in the buffer (or for recovery), then queues `command`.
    private func submitWaitingForRoom(_ command: Command, confirming: Bool, deadline: ContinuousClock.Instant?) async throws {
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
