import CRabbitMQ
import Glibc
import Logging
import Synchronization

/// Automatic recovery, run by the I/O thread in place of a teardown when the connection is
/// lost: reconnect with back-off over the endpoints, then restore channels (prefetch,
/// confirm mode), exchanges, queues (server-named ones get new names), bindings and
/// consumers, in that order (the Java client's), and re-publish unconfirmed messages.
///
/// While it waits between attempts the loop keeps answering commands (requests fail fast
/// with a retriable error, publishes are held, publishers wait in the core with a deadline).
/// While it restores, it blocks on its own requests, servicing frames and heartbeats.
extension IOLoop {
    /// Losses worth reconnecting for. A refused login means the credentials or the virtual
    /// host changed: retrying would only hammer the broker.
    static func isRecoverable(_ error: RabbitMQError) -> Bool {
        !isLoginRefusal(error) && error.code != .closed
    }

    func recover(after error: RabbitMQError) {
        suspend(after: error)
        core.emit(.disconnected(error))
        var backoff = Backoff(configuration.recovery)
        var attempt = 0
        var lastError = error
        while !finished {
            if let limit = configuration.recovery.maxAttempts, attempt >= limit {
                giveUp(RabbitMQError(
                    code: lastError.code, scope: .connection,
                    message: "recovery gave up after \(attempt) attempts; last error: \(lastError.message)",
                    replyText: lastError.replyText, libraryStatus: lastError.libraryStatus))
                return
            }
            wait(backoff.next { Double.random(in: 0..<1, using: &random) })
            if finished { return }
            attempt += 1
            logger.info("recovery attempt", metadata: ["rabbitmq.attempt": "\(attempt)"])
            core.emit(.recoveryAttempt(attempt))
            let endpoint: RabbitMQConfiguration.Endpoint
            do {
                endpoint = try connect()
            } catch {
                lastError = error
                if Self.isLoginRefusal(error) {
                    giveUp(error)
                    return
                }
                continue
            }
            do {
                try restore()
            } catch {
                // Lost again while restoring: back to square one on a fresh connection.
                logger.info("connection lost during recovery", metadata: [LogKey.error: "\(error)"])
                lastError = error
                suspend(after: error)
                continue
            }
            if finished { return }
            core.setRecovering(false)
            logger.info("recovered", metadata: [LogKey.endpoint: "\(endpoint)", "rabbitmq.attempts": "\(attempt)"])
            core.emit(.recovered(endpoint: endpoint.description))
            do {
                try releaseHeld()
            } catch {
                connectionLost(error)
            }
            return
        }
    }

    private func giveUp(_ error: RabbitMQError) {
        logger.error("recovery failed", metadata: [LogKey.error: "\(error)"])
        core.emit(.recoveryFailed(error))
        teardown(error)
    }

    /// Forgets the dead connection but keeps what recovery needs: channels, their consumers
    /// and unconfirmed publishes, the topology registry.
    private func suspend(after error: RabbitMQError) {
        core.setRecovering(true)
        destroyState()
        epoch &+= 1
        blocked = false
        let lost = RabbitMQError(
            code: error.code, scope: .connection,
            message: "the connection was lost and is recovering (\(error.message))",
            replyText: error.replyText, classID: error.classID, methodID: error.methodID,
            libraryStatus: error.libraryStatus)
        for channel in Array(channels.values) {
            channel.content = nil
            if channel.isInternal || channel.phase == .closing {
                // The close the application asked for is as good as done: the broker dropped it.
                finishChannel(channel, error: channel.shared.closeReason ?? lost, graceful: true)
                continue
            }
            if !channel.wasOpened {
                // Its open was in flight: the caller gets the error and never sees the channel.
                finishChannel(channel, error: lost, graceful: false)
                continue
            }
            failPending(channel, lost)
            channel.phase = .opening
            let unconfirmed = channel.unconfirmed.takeAll()
            if configuration.recovery.republishUnconfirmed {
                channel.republish.append(contentsOf: unconfirmed)
            } else {
                for entry in unconfirmed { entry.ticket?.resolve(.failure(lost)) }
                channel.shared.releaseConfirmSlots(unconfirmed.count)
            }
        }
    }

    // MARK: Waiting between attempts

    /// Sleeps until the back-off delay has passed, still answering commands and expiring
    /// publishers that waited too long.
    private func wait(_ delay: Duration) {
        let deadline = clock.now.advanced(by: delay)
        var wake = pollfd(fd: core.wakeDescriptor, events: Int16(POLLIN), revents: 0)
        repeat {
            runCommandsWhileDisconnected()
            core.expireOutageWaiters(now: clock.now)
            if finished { return }
            let remaining = clock.now.duration(to: deadline)
            guard remaining > .zero else { return }
            guard core.prepareToSleep() else { continue }
            wake.revents = 0
            let milliseconds = min(250, Int((remaining.seconds * 1000).rounded(.up)))
            _ = poll(&wake, 1, Int32(milliseconds))
            if wake.revents != 0 {
                var counter: UInt64 = 0
                _ = read(core.wakeDescriptor, &counter, 8)
            }
        } while true
    }

    private func runCommandsWhileDisconnected() {
        core.takeCommands(into: &commands)
        let batch = commands
        commands.removeAll(keepingCapacity: true)
        let recovering = RabbitMQError(
            code: .connectionClosed, scope: .none,
            message: "the connection is recovering; try again when it is back")
        for (index, command) in batch.enumerated() {
            switch command {
            case .openChannel, .request, .consume:
                fail(command, recovering)
            case .publish(let shared, let message, let ticket):
                held.append((shared, message, ticket))
            case .settle:
                break  // its epoch is gone: the broker requeued the message
            case .cancelConsumer(let shared, let tag, let continuation):
                if let channel = channels[shared.number], channel.shared === shared,
                    let consumer = channel.consumers.removeValue(forKey: tag)
                {
                    consumer.sink.buffer.finish()
                    forgetAutoDeleteQueue(consumer.request.queue)
                }
                continuation?.resume(returning: .ok)
            case .closeChannel(let shared, let continuation):
                if let channel = channels[shared.number], channel.shared === shared {
                    channel.closeWaiters.append(continuation)
                    finishChannel(
                        channel, error: RabbitMQError(code: .closed, scope: .channel, message: "the channel was closed by the application"),
                        graceful: true)
                } else {
                    continuation.resume()
                }
            case .close(let continuation):
                // Nothing to close on the broker: end here, gracefully; teardown fails the rest.
                commands = Array(batch[(index + 1)...])
                closing = Closing(waiters: continuation.map { [$0] } ?? [], deadline: clock.now)
                teardown(nil)
                return
            }
        }
    }

    // MARK: Restoring

    private func restore() throws(RabbitMQError) {
        for channel in channels.values.sorted(by: { $0.number < $1.number }) where !channel.isInternal {
            var open = amqp_channel_open_t(out_of_band: amqp_bytes_t(len: 0, bytes: nil))
            try send(channel.number, AMQP_CHANNEL_OPEN_METHOD, &open)
            try wait(for: channel, expecting: AMQP_CHANNEL_OPEN_OK_METHOD)
            if let prefetch = channel.prefetch {
                _ = try call(channel, .basicQos(prefetchCount: prefetch.count, global: prefetch.global))
            }
            if channel.confirmMode { _ = try call(channel, .confirmSelect) }
        }
        if configuration.recovery.recoversTopology {
            try restoreTopology()
            try restoreConsumers()
        } else {
            for channel in channels.values {
                for (_, consumer) in channel.consumers {
                    consumer.sink.buffer.finish(
                        throwing: RabbitMQError(code: .consumerCancelled, message: "topology recovery is disabled"))
                }
                channel.consumers.removeAll()
            }
        }
        try republish()
    }

    /// Exchanges, then queues, then bindings, on a channel of its own: an entity the broker
    /// refuses (406, 404) closes only that channel, is reported, and the rest goes on.
    private func restoreTopology() throws(RabbitMQError) {
        guard !registry.isEmpty else { return }
        let filter = configuration.recovery.topologyFilter
        var channel = try openInternalChannel()
        defer {
            if channels[channel.number] === channel { _ = try? closeInternalChannel(channel) }
        }

        for exchange in registry.exchanges where filter.exchanges?(exchange.name) ?? true {
            let request = ChannelRequest.exchangeDeclare(
                name: exchange.name, type: exchange.type, passive: false, durable: exchange.durable,
                autoDelete: exchange.autoDelete, internal: exchange.isInternal, arguments: exchange.arguments)
            _ = try restoreEntity("exchange \(exchange.name)", request, on: &channel)
        }
        for queue in registry.queues where filter.queues?(queue.name) ?? true {
            let request = ChannelRequest.queueDeclare(
                name: queue.requestedName, passive: false, durable: queue.durable, exclusive: queue.exclusive,
                autoDelete: queue.autoDelete, arguments: queue.arguments)
            guard case .queueDeclared(let result)? = try restoreEntity("queue \(queue.name)", request, on: &channel, exclusive: queue.exclusive)
            else { continue }
            if result.name != queue.name { rename(queue: queue.name, to: result.name) }
        }
        for binding in registry.bindings where filter.bindings?(binding.source, binding.destination, binding.routingKey) ?? true {
            let request: ChannelRequest =
                switch binding.destinationKind {
                case .queue:
                    .queueBind(queue: binding.destination, exchange: binding.source, routingKey: binding.routingKey, arguments: binding.arguments)
                case .exchange:
                    .exchangeBind(
                        destination: binding.destination, source: binding.source, routingKey: binding.routingKey,
                        arguments: binding.arguments)
                }
            _ = try restoreEntity("binding \(binding.source) -> \(binding.destination) (\(binding.routingKey))", request, on: &channel)
        }
    }

    /// Declares one entity; a channel-level refusal is reported and the channel replaced.
    /// An exclusive queue may be refused with 405 while the broker has not yet noticed that
    /// the old connection died: that is retried for a while.
    private func restoreEntity(
        _ entity: String, _ request: ChannelRequest, on channel: inout ChannelIO, exclusive: Bool = false
    ) throws(RabbitMQError) -> ChannelReply? {
        let lockedDeadline = clock.now.advanced(by: .seconds(max(2 * heartbeat, 10)))
        while true {
            do {
                return try call(channel, request)
            } catch where error.scope == .channel {
                channel = try openInternalChannel()
                if exclusive, error.code == .resourceLocked, clock.now < lockedDeadline {
                    try pause(.seconds(1))
                    continue
                }
                logger.warning("could not restore \(entity)", metadata: [LogKey.error: "\(error)"])
                core.emit(.topologyRecoveryFailed(entity: entity, error: error))
                return nil
            }
        }
    }

    private func rename(queue old: String, to new: String) {
        registry.renameQueue(from: old, to: new)
        core.recordRename(from: old, to: new)
        for channel in channels.values {
            for (tag, var consumer) in channel.consumers where consumer.request.queue == old {
                consumer.request.queue = new
                channel.consumers[tag] = consumer
            }
        }
        logger.info("server-named queue renamed", metadata: ["rabbitmq.old_queue": "\(old)", LogKey.queue: "\(new)"])
        core.emit(.queueRenamed(from: old, to: new))
    }

    /// Registers every consumer again, same tag, on its own channel. A consumer whose queue
    /// is gone closes its channel: its sequence, and those of its channel mates, end with
    /// that error.
    private func restoreConsumers() throws(RabbitMQError) {
        let filter = configuration.recovery.topologyFilter
        var probe: ChannelIO?
        defer {
            if let probe, channels[probe.number] === probe { _ = try? closeInternalChannel(probe) }
        }
        for channel in channels.values.sorted(by: { $0.number < $1.number }) where !channel.isInternal {
            for (tag, consumer) in channel.consumers.sorted(by: { $0.key < $1.key }) {
                guard channels[channel.number] === channel, channel.phase == .open else { break }
                guard filter.consumers?(tag, consumer.request.queue) ?? true else {
                    channel.consumers[tag] = nil
                    consumer.sink.buffer.finish(
                        throwing: RabbitMQError(code: .consumerCancelled, message: "consumer \(tag) was not recovered (filtered out)"))
                    continue
                }
                let request = consumer.request
                try waitForQueue(request.queue, probe: &probe)
                guard channels[channel.number] === channel, channel.phase == .open else { break }
                var consume = amqp_basic_consume_t(
                    ticket: 0, queue: scratch.bytes(request.queue), consumer_tag: scratch.bytes(request.consumerTag),
                    no_local: 0, no_ack: request.noAck ? 1 : 0, exclusive: request.exclusive ? 1 : 0, nowait: 0,
                    arguments: scratch.table(request.arguments))
                try send(channel.number, AMQP_BASIC_CONSUME_METHOD, &consume)
                scratch.recycle()
                do {
                    try wait(for: channel, expecting: AMQP_BASIC_CONSUME_OK_METHOD)
                } catch where error.scope == .channel {
                    logger.warning("could not restore consumer \(tag)", metadata: [LogKey.error: "\(error)"])
                    core.emit(.topologyRecoveryFailed(entity: "consumer \(tag) on \(request.queue)", error: error))
                }
            }
        }
    }

    /// Waits, for a bounded time, until `queue` exists. A consumer's queue is often declared
    /// by another connection (the publisher's) that is still recovering, or re-created by a
    /// broker that just restarted: consuming from it too early fails with 404 and would end
    /// the consumer for good. The passive declares run on an internal channel, so a 404
    /// closes only that one; after the deadline the consume goes ahead and reports.
    private func waitForQueue(_ queue: String, probe: inout ChannelIO?) throws(RabbitMQError) {
        let deadline = clock.now.advanced(by: .seconds(max(2 * heartbeat, 10)))
        while true {
            if probe == nil || channels[probe!.number] !== probe { probe = try openInternalChannel() }
            do {
                _ = try call(
                    probe!,
                    .queueDeclare(name: queue, passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]))
                return
            } catch where error.scope == .channel {
                probe = nil
                guard error.code == .notFound, clock.now < deadline else { return }
                logger.debug("waiting for a consumer's queue", metadata: [LogKey.queue: "\(queue)"])
                try pause(.milliseconds(250))
            }
        }
    }

    /// Publishes the unconfirmed messages of the lost connection again, in their order;
    /// their publishers get the confirms of the new connection.
    private func republish() throws(RabbitMQError) {
        for channel in channels.values.sorted(by: { $0.number < $1.number }) where !channel.republish.isEmpty {
            let entries = channel.republish
            channel.republish.removeAll()
            logger.debug(
                "publishing unconfirmed messages again",
                metadata: [LogKey.channel: "\(channel.number)", "rabbitmq.count": "\(entries.count)"])
            for (index, entry) in entries.enumerated() {
                guard let message = entry.message, channel.phase == .open else {
                    let error = channel.shared.closeReason ?? RabbitMQError.channelClosed()
                    for rest in entries[index...] { rest.ticket?.resolve(.failure(error)) }
                    channel.shared.releaseConfirmSlots(entries.count - index)
                    break
                }
                entry.ticket?.republished.store(true, ordering: .relaxed)
                try send(channel.shared, message, entry.ticket)
            }
        }
        try flushPublishes()
    }

    // MARK: Synchronous requests (recovery only)

    private func call(_ channel: ChannelIO, _ request: ChannelRequest) throws(RabbitMQError) -> ChannelReply {
        let expected = try send(request, on: channel)
        return try wait(for: channel, expecting: expected.0, or: expected.1)
    }

    @discardableResult
    private func wait(
        for channel: ChannelIO, expecting reply: amqp_method_number_t, or alternative: amqp_method_number_t? = nil
    ) throws(RabbitMQError) -> ChannelReply {
        let box = ReplyBox()
        enqueue(channel, .internal(box), expecting: reply, or: alternative)
        let deadline = clock.now.advanced(by: configuration.requestTimeout)
        while box.result == nil {
            let busy = try drainFrames()
            if box.result != nil { break }
            if finished { throw core.terminalError ?? .connectionClosed() }
            guard clock.now < deadline else {
                throw RabbitMQError(
                    code: .timeout, scope: .connection,
                    message: "the broker did not answer within \(configuration.requestTimeout) during recovery")
            }
            if !busy && amqp_frames_enqueued(state) == 0 && amqp_data_in_buffer(state) == 0 {
                var socket = pollfd(fd: socketDescriptor, events: Int16(POLLIN), revents: 0)
                _ = poll(&socket, 1, 100)
            }
        }
        return try box.result!.get()
    }

    /// Waits while servicing the connection (heartbeats, deliveries already flowing).
    private func pause(_ duration: Duration) throws(RabbitMQError) {
        let deadline = clock.now.advanced(by: duration)
        while clock.now < deadline {
            _ = try drainFrames()
            var socket = pollfd(fd: socketDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&socket, 1, 100)
        }
    }

    private func openInternalChannel() throws(RabbitMQError) -> ChannelIO {
        let number = try core.allocateChannel()
        let channel = ChannelIO(shared: ChannelShared(number: number, core: core), isInternal: true)
        channels[number] = channel
        var open = amqp_channel_open_t(out_of_band: amqp_bytes_t(len: 0, bytes: nil))
        try send(number, AMQP_CHANNEL_OPEN_METHOD, &open)
        try wait(for: channel, expecting: AMQP_CHANNEL_OPEN_OK_METHOD)
        return channel
    }

    private func closeInternalChannel(_ channel: ChannelIO) throws(RabbitMQError) {
        try beginClose(channel, reason: "closed after recovery")
        let deadline = clock.now.advanced(by: configuration.requestTimeout)
        while channels[channel.number] === channel, clock.now < deadline {
            _ = try drainFrames()
            var socket = pollfd(fd: socketDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&socket, 1, 50)
        }
    }
}
