/// Losing the connection and getting it back: what is kept, what fails, and the recovery
/// plan's steps (see ``RecoveryPlan``), driven one event at a time.
extension ConnectionStateMachine {
    // MARK: Loss

    /// The socket failed, a heartbeat timed out, the broker closed the connection or broke
    /// the protocol.
    func connectionLost(_ error: RabbitMQError, now: ContinuousClock.Instant) {
        switch state {
        case .closed, .connecting:
            return
        case .closing:
            // The socket went away while we were closing anyway.
            terminate(nil, now: now)
            return
        case .open, .blocked, .recovering:
            break
        }
        emit(.closeSocket)
        heartbeat.stop()
        let recovering: RecoveryPlan?
        if case .recovering(let plan) = state { recovering = plan } else { recovering = nil }
        guard settings.recovery.isEnabled, RecoveryPlan.isRecoverable(error) else {
            emit(.log(.warning, "connection lost", [LogKey.error: "\(error)"]))
            terminate(error, now: now, events: recovering != nil ? [.recoveryFailed(error)] : [])
            return
        }
        var plan: RecoveryPlan
        if var recovering {
            emit(.log(.info, "connection lost during recovery", [LogKey.error: "\(error)"]))
            recovering.lastError = error
            recovering.blocked = nil
            plan = recovering
        } else {
            emit(.log(.warning, "connection lost", [LogKey.error: "\(error)"]))
            // The phase first: whoever reacts to the event must already find publishes held.
            emit(.setPhase(.recovering))
            emit(.emit(.disconnected(error)))
            plan = RecoveryPlan(step: .connecting, backoff: Backoff(settings.recovery), lastError: error)
        }
        suspend(after: error)
        plan.step = .backingOff(until: now.advanced(by: plan.backoff.next(random: random)))
        state = .recovering(plan)
    }

    /// Forgets the dead connection but keeps what recovery needs: channels, their consumers
    /// and unconfirmed publishes, the topology registry. What was in flight is answered:
    /// requests fail with a retriable error; a consume or a cancel in flight fails, and that
    /// consumer is not brought back (nobody owns it).
    private func suspend(after error: RabbitMQError) {
        bumpEpoch()
        secretUpdatesCarriedOver()
        let lost = RabbitMQError(
            code: error.code, scope: .connection,
            message: "the connection was lost and is recovering (\(error.message))",
            replyText: error.replyText, classID: error.classID, methodID: error.methodID,
            libraryStatus: error.libraryStatus)
        for channel in sortedChannels() {
            if channel.isInternal {
                removeChannel(channel.number)
                freeChannelNumber(channel.number)
                continue
            }
            if channel.phase == .closing || channel.closing != nil {
                // The close the application asked for is as good as done: the broker dropped it.
                finishChannel(channel, error: channel.closing?.error ?? Self.channelClosedByApplication, graceful: channel.closing?.graceful ?? true)
                continue
            }
            if !channel.wasOpened {
                // Its open was in flight: the caller gets the error and never sees the channel.
                finishChannel(channel, error: lost, graceful: false)
                continue
            }
            let (inFlight, unconfirmed) = channel.suspend(republishUnconfirmed: settings.recovery.republishUnconfirmed)
            for pending in inFlight {
                switch pending.kind {
                case .open(let waiter), .request(_, let waiter):
                    if let waiter { emit(.fail(waiter, lost)) }
                case .consume(let tag):
                    // A consume that recovery itself sent is tried again; the application's
                    // caller gets the error, and the consumer is gone.
                    guard case .registering(let waiter)? = channel.consumers[tag]?.state, waiter != nil || channel.consumers[tag]!.cancelRequested
                    else { continue }
                    forgetConsumer(tag, on: channel, error: lost)
                case .cancel(let tag):
                    // The consumer died with the connection: it stays cancelled. Its callers
                    // learn that the connection was lost before cancel-ok.
                    guard let consumer = channel.removeConsumer(tag) else { continue }
                    if case .cancelling(let waiters) = consumer.state {
                        for waiter in waiters { emit(.fail(waiter, lost)) }
                    }
                    for waiter in consumer.cancelWaiters { emit(.fail(waiter, lost)) }
                    emit(.finishConsumer(consumer.sink, nil))
                    forgetAutoDeleteQueue(consumer.request.queue)
                case .close:
                    break
                }
            }
            for (tag, consumer) in channel.consumers {
                channel.updateConsumer(tag) { $0.state = .dormant }
                // Deliveries of the dead connection still buffered are requeued by the broker
                // and come back: never hand them out twice.
                if !consumer.sink.noAck { emit(.dropStaleDeliveries(consumer.sink, epoch: epoch)) }
            }
            failUnconfirmed(unconfirmed, on: channel, error: lost)
        }
    }

    // MARK: Back-off and connect

    /// The back-off is over: the next connect attempt, unless the attempts are used up.
    private func startAttempt(_ plan: inout RecoveryPlan, now: ContinuousClock.Instant) -> Bool {
        if let limit = settings.recovery.maxAttempts, plan.attempt >= limit {
            giveUp(
                RabbitMQError(
                    code: plan.lastError.code, scope: .connection,
                    message: "recovery gave up after \(plan.attempt) attempts; last error: \(plan.lastError.message)",
                    replyText: plan.lastError.replyText, libraryStatus: plan.lastError.libraryStatus),
                now: now)
            return false
        }
        plan.attempt += 1
        plan.step = .connecting
        emit(.log(.info, "recovery attempt", ["rabbitmq.attempt": "\(plan.attempt)"]))
        emit(.emit(.recoveryAttempt(plan.attempt)))
        emit(.connect(attempt: plan.attempt))
        return true
    }

    /// A recovery connect attempt failed (every endpoint).
    func connectFailed(_ error: RabbitMQError, now: ContinuousClock.Instant) {
        guard case .recovering(var plan) = state, case .connecting = plan.step else { return }
        plan.lastError = error
        if RecoveryPlan.isLoginRefusal(error) {
            giveUp(error, now: now)
            return
        }
        plan.step = .backingOff(until: now.advanced(by: plan.backoff.next(random: random)))
        state = .recovering(plan)
    }

    private func giveUp(_ error: RabbitMQError, now: ContinuousClock.Instant) {
        emit(.log(.error, "recovery failed", [LogKey.error: "\(error)"]))
        terminate(error, now: now, events: [.recoveryFailed(error)])
    }

    // MARK: Restore

    /// The operations that bring back what the application had, in order.
    func makeRestore(endpoint: String) -> Restore {
        var operations: [Restore.Operation] = []
        let userChannels = sortedChannels().filter { !$0.isInternal && $0.phase == .dormant }
        for channel in userChannels {
            operations.append(.reopen(channel.number))
            if let count = channel.prefetch.perConsumer {
                operations.append(.qos(channel.number, prefetchCount: count, global: false))
            }
            if let count = channel.prefetch.global {
                operations.append(.qos(channel.number, prefetchCount: count, global: true))
            }
            if channel.confirmMode { operations.append(.confirmSelect(channel.number)) }
        }
        if settings.recovery.recoversTopology {
            let filter = settings.recovery.topologyFilter
            var topology: [Restore.Operation] = []
            for exchange in registry.exchanges where filter.exchanges?(exchange.name) ?? true {
                topology.append(.exchange(exchange))
            }
            for queue in registry.queues where filter.queues?(queue.name) ?? true {
                topology.append(.queue(queue, lockedUntil: nil))
            }
            for binding in registry.bindings where filter.bindings?(binding.source, binding.destination, binding.routingKey) ?? true {
                topology.append(.binding(binding))
            }
            var consumers: [Restore.Operation] = []
            for channel in userChannels {
                for (tag, consumer) in channel.consumers.sorted(by: { $0.key < $1.key }) {
                    consumers.append(.waitForQueue(consumer.request.queue, until: nil))
                    consumers.append(.consume(channel.number, consumerTag: tag))
                }
            }
            if !topology.isEmpty || !consumers.isEmpty {
                operations.append(.openInternal)
                operations += topology
                operations += consumers
                operations.append(.closeInternal)
            }
        }
        operations.append(.republish)
        return Restore(operations: operations, endpoint: endpoint)
    }

    /// Runs the plan's operations until one waits for a reply or a pause, or the plan is done.
    func advanceRecovery(now: ContinuousClock.Instant) {
        while case .recovering(var plan) = state, case .restoring(var restore) = plan.step {
            if restore.inFlight != nil { return }
            if let paused = restore.pausedUntil {
                if now < paused { return }
                restore.pausedUntil = nil
            }
            guard let operation = restore.takeNext() else {
                finishRecovery(restore, now: now)
                return
            }
            let sent = start(operation, in: &restore, now: now)
            if sent { restore.inFlight = operation }
            plan.step = .restoring(restore)
            // `start` may have given up (no channel number): then the state is closed.
            guard case .recovering = state else { return }
            state = .recovering(plan)
        }
    }

    /// Starts one operation; returns true when it sent a request whose reply is awaited.
    private func start(_ operation: Restore.Operation, in restore: inout Restore, now: ContinuousClock.Instant) -> Bool {
        let deadline = now.advanced(by: settings.requestTimeout)
        switch operation {
        case .reopen(let number):
            guard let channel = channels[number], channel.phase == .dormant else { return false }
            channel.reopening()
            channel.enqueue(.open(nil), expecting: (.channelOpenOk, .channelOpenOk), deadline: deadline, isRecovery: true)
            emit(.send(number, .channelOpen))
            return true
        case .qos(let number, let count, let global):
            return sendRecoveryRequest(.basicQos(prefetchCount: count, global: global), on: number, deadline: deadline)
        case .confirmSelect(let number):
            return sendRecoveryRequest(.confirmSelect, on: number, deadline: deadline)
        case .openInternal:
            guard let number = allocateInternalChannel() else {
                giveUp(
                    RabbitMQError(
                        code: .resourceError, scope: .connection,
                        message: "recovery needs a free channel number to restore the topology, and all channels of this connection are in use (channelMax)"),
                    now: now)
                return false
            }
            let channel = ChannelStateMachine(number: number, shared: nil)
            addChannel(channel)
            restore.internalChannel = number
            channel.enqueue(.open(nil), expecting: (.channelOpenOk, .channelOpenOk), deadline: deadline, isRecovery: true)
            emit(.send(number, .channelOpen))
            return true
        case .exchange(let exchange):
            guard registry.exchanges.contains(where: { $0.name == exchange.name }) else { return false }
            return sendInternal(
                .exchangeDeclare(
                    name: exchange.name, type: exchange.type, passive: false, durable: exchange.durable,
                    autoDelete: exchange.autoDelete, internal: exchange.isInternal, arguments: exchange.arguments),
                restore, deadline: deadline)
        case .queue(let queue, _):
            guard registry.queue(named: queue.name) != nil else { return false }
            return sendInternal(
                .queueDeclare(
                    name: queue.requestedName, passive: false, durable: queue.durable, exclusive: queue.exclusive,
                    autoDelete: queue.autoDelete, arguments: queue.arguments),
                restore, deadline: deadline)
        case .binding(let binding):
            guard registry.bindings.contains(binding) else { return false }
            let request: ChannelRequest =
                switch binding.destinationKind {
                case .queue:
                    .queueBind(queue: binding.destination, exchange: binding.source, routingKey: binding.routingKey, arguments: binding.arguments)
                case .exchange:
                    .exchangeBind(destination: binding.destination, source: binding.source, routingKey: binding.routingKey, arguments: binding.arguments)
                }
            return sendInternal(request, restore, deadline: deadline)
        case .waitForQueue(let queue, _):
            return sendInternal(
                .queueDeclare(name: queue, passive: true, durable: false, exclusive: false, autoDelete: false, arguments: [:]),
                restore, deadline: deadline)
        case .consume(let number, let tag):
            guard let channel = channels[number], channel.isOpen, let consumer = channel.consumers[tag],
                case .dormant = consumer.state
            else { return false }
            let filter = settings.recovery.topologyFilter
            guard filter.consumers?(tag, consumer.request.queue) ?? true else {
                forgetConsumer(
                    tag, on: channel,
                    error: RabbitMQError(code: .consumerCancelled, message: "consumer \(tag) was not recovered (filtered out)"))
                return false
            }
            var request = consumer.request
            if consumer.sink.buffer.tracksStreamOffset, let next = consumer.sink.buffer.streamResumeOffset {
                // A stream consumer goes on where the application stopped reading, not from its first offset.
                request.arguments[StreamConsumeCheck.offsetArgument] = .int64(Int64(clamping: next))
            }
            channel.updateConsumer(tag) {
                $0.state = .registering(nil)
                $0.request = request
            }
            channel.enqueue(.consume(tag: tag), expecting: (.basicConsumeOk, .basicConsumeOk), deadline: deadline, isRecovery: true)
            emit(.send(number, .basicConsume(request)))
            return true
        case .closeInternal:
            if let number = restore.internalChannel, let channel = channels[number], channel.isOpen {
                beginClose(channel, error: Self.channelClosedByApplication, graceful: true, waiters: [], now: now)
            }
            restore.internalChannel = nil
            return false
        case .republish:
            republish()
            return false
        }
    }

    private func sendRecoveryRequest(_ request: ChannelRequest, on number: UInt16, deadline: ContinuousClock.Instant) -> Bool {
        guard let channel = channels[number], channel.isOpen else { return false }
        channel.enqueue(.request(request, nil), expecting: request.expectedReplies, deadline: deadline, isRecovery: true)
        emit(.send(number, .request(request)))
        return true
    }

    private func sendInternal(_ request: ChannelRequest, _ restore: Restore, deadline: ContinuousClock.Instant) -> Bool {
        guard let number = restore.internalChannel else { return false }
        return sendRecoveryRequest(request, on: number, deadline: deadline)
    }

    /// The reply to the plan's request in flight (or its channel's close).
    func recoveryReplied(_ number: UInt16, _ result: Result<ChannelReply, RabbitMQError>, now: ContinuousClock.Instant) {
        guard case .recovering(var plan) = state, case .restoring(var restore) = plan.step,
            let operation = restore.inFlight
        else { return }
        restore.inFlight = nil
        switch result {
        case .success(let reply):
            if case .queue(let queue, _) = operation, case .queueDeclared(let result) = reply, result.name != queue.name {
                rename(queue: queue.name, to: result.name)
                restore.renameQueue(from: queue.name, to: result.name)
            }
        case .failure(let error):
            var next: [Restore.Operation] = []
            if number == restore.internalChannel {
                // The broker closed the plan's channel: open another for what follows.
                restore.internalChannel = nil
                next.append(.openInternal)
            }
            switch operation {
            case .queue(let queue, let lockedUntil) where queue.exclusive && error.code == .resourceLocked:
                // 405: the broker has not noticed yet that the old connection died.
                let until = lockedUntil ?? now.advanced(by: Restore.lockWait(heartbeat: heartbeat.interval ?? .zero))
                if now < until {
                    next.append(.queue(queue, lockedUntil: until))
                    restore.pausedUntil = now.advanced(by: Restore.lockedRetryPause)
                } else {
                    topologyFailed("queue \(queue.name)", error)
                }
            case .waitForQueue(let queue, let until) where error.code == .notFound:
                // Another connection (the publisher's) may not have declared it again yet.
                let limit = until ?? now.advanced(by: Restore.lockWait(heartbeat: heartbeat.interval ?? .zero))
                if now < limit {
                    emit(.log(.debug, "waiting for a consumer's queue", [LogKey.queue: queue]))
                    next.append(.waitForQueue(queue, until: limit))
                    restore.pausedUntil = now.advanced(by: Restore.missingQueuePause)
                }
            case .waitForQueue:
                break
            case .exchange(let exchange):
                topologyFailed("exchange \(exchange.name)", error)
            case .queue(let queue, _):
                topologyFailed("queue \(queue.name)", error)
            case .binding(let binding):
                topologyFailed("binding \(binding.source) -> \(binding.destination) (\(binding.routingKey))", error)
            case .consume(_, let tag):
                topologyFailed("consumer \(tag)", error)
            case .qos(let channel, _, let global):
                topologyFailed("\(global ? "global " : "")prefetch of channel \(channel)", error)
            case .confirmSelect(let channel):
                topologyFailed("confirm mode of channel \(channel)", error)
            case .reopen, .openInternal, .closeInternal, .republish:
                break
            }
            restore.insertNext(next)
        }
        plan.step = .restoring(restore)
        state = .recovering(plan)
        advanceRecovery(now: now)
    }

    /// The application closed the channel the plan's request in flight was on: nothing is
    /// left to restore there, and the plan goes on (no `topologyRecoveryFailed`: nothing
    /// failed).
    func recoveryAbandoned(_ number: UInt16, now: ContinuousClock.Instant) {
        guard case .recovering(var plan) = state, case .restoring(var restore) = plan.step, restore.inFlight != nil,
            number != restore.internalChannel
        else { return }
        restore.inFlight = nil
        plan.step = .restoring(restore)
        state = .recovering(plan)
        advanceRecovery(now: now)
    }

    func topologyFailed(_ entity: String, _ error: RabbitMQError) {
        emit(.log(.warning, "could not restore \(entity)", [LogKey.error: "\(error)"]))
        emit(.emit(.topologyRecoveryFailed(entity: entity, error: error)))
    }

    private func rename(queue old: String, to new: String) {
        recordTopology { $0.renameQueue(from: old, to: new) }
        for channel in channels.values { channel.renameQueue(from: old, to: new) }
        emit(.log(.info, "server-named queue renamed", ["rabbitmq.old_queue": old, LogKey.queue: new]))
        emit(.emit(.queueRenamed(from: old, to: new)))
    }

    /// Publishes the unconfirmed messages of the lost connection again, in their order.
    /// Each moves back into its channel's window as it goes out, so a drop in the middle
    /// loses none: the next recovery publishes the rest, and these again.
    private func republish() {
        for channel in sortedChannels() where channel.hasRepublish {
            guard channel.isOpen else {
                failUnconfirmed(channel.takeRepublish(), on: channel, error: channel.shared?.closeReason ?? .channelClosed())
                continue
            }
            emit(.log(.debug, "publishing unconfirmed messages again", [LogKey.channel: "\(channel.number)"]))
            while var entry = channel.nextRepublish() {
                guard let message = entry.message else {
                    failUnconfirmed([entry], on: channel, error: .channelClosed())
                    continue
                }
                entry.returned = nil
                entry.ticket?.markRepublished()
                let sequence = channel.unconfirmed.next
                channel.unconfirmed.append(entry)
                emit(.publish(channel.number, message, returnTag: message.mandatory ? sequence : nil, holdsRoom: false))
            }
        }
    }

    private func finishRecovery(_ restore: Restore, now: ContinuousClock.Instant) {
        guard case .recovering(let plan) = state else { return }
        if let blocked = plan.blocked { setState(.blocked(blocked)) } else { setState(.open) }
        emit(.setPhase(.open))
        emit(.log(.info, "recovered", [LogKey.endpoint: restore.endpoint, "rabbitmq.attempts": "\(plan.attempt)"]))
        emit(.emit(.recovered(endpoint: restore.endpoint)))
        releaseHeld(now: now)
    }

    // MARK: Time

    /// Deadlines reached: request timeouts, the close deadline, the back-off, a recovery
    /// pause, heartbeats.
    func tick(now: ContinuousClock.Instant) {
        switch phase {
        case .connecting, .closed:
            return
        case .recovering:
            guard case .recovering(var plan) = state else { return }
            switch plan.step {
            case .backingOff(let until):
                guard until <= now else { return }
                if startAttempt(&plan, now: now) { state = .recovering(plan) }
                return
            case .connecting:
                return
            case .restoring:
                advanceRecovery(now: now)
            }
        case .open, .blocked, .closingOpen, .closingBlocked, .closingSent:
            break
        }
        if !isBlocked {
            expireRequests(now: now)
            if !secretUpdates.isEmpty { expireSecretUpdates(now: now) }
        }
        if phase == .closingOpen || phase == .closingBlocked || phase == .closingSent, closeDeadlinePassed(now: now) { return }
        sendConnectionCloseIfDrained(now: now)
        guard isConnected, !isClosed else { return }
        guard heartbeat.isOn else { return }
        // `!(now < x)`, not `x <= now`: `<=` goes through Comparable's generic default.
        if !(now < heartbeat.sendDue) {
            heartbeat.sent(now)
            emit(.sendHeartbeat)
        }
        if !heartbeat.checking, !(now < heartbeat.silenceDue) {
            heartbeat.checking = true
            emit(.checkPeerSilence)
        }
    }

    /// Drops the socket if the close did not complete before its deadline; true if so.
    @inline(never)
    private func closeDeadlinePassed(now: ContinuousClock.Instant) -> Bool {
        guard case .closing(let closing) = state, closing.deadline <= now else { return false }
        emit(.log(.debug, "the close did not complete before its deadline; dropping the socket", [:]))
        if !closing.sentClose { emit(.send(0, .connectionClose(replyCode: 200, replyText: "Normal shutdown"))) }
        terminate(nil, now: now)
        return true
    }

    /// The kernel's answer to ``ConnectionAction/checkPeerSilence``: how long nothing arrived.
    func peerSilence(_ silence: Duration, now: ContinuousClock.Instant) {
        heartbeat.checking = false
        guard let interval = heartbeat.interval else { return }
        if silence >= interval * 2 {
            connectionLost(
                RabbitMQError(
                    code: .heartbeatTimeout, scope: .connection,
                    message: "the broker sent nothing for \(silence) (two heartbeat intervals of \(interval))"),
                now: now)
        } else {
            heartbeat.received(now - silence)
        }
    }

    private func expireRequests(now: ContinuousClock.Instant) {
        // Every turn: a plain look first, the expired ones (rare) in channel order after.
        guard channels.values.contains(where: { $0.hasPending && !(now < $0.earliestPendingDeadline) }) else { return }
        for channel in sortedChannels() {
            guard let head = channel.earliestDeadline, head <= now else { continue }
            guard channels[channel.number] === channel else { continue }
            let message = "the broker did not answer within \(settings.requestTimeout) on channel \(channel.number)"
            if channel.phase == .closing || channel.hasRecoveryRequest || channel.isInternal {
                // Not even close-ok came back, or recovery is stuck: the connection is unusable.
                connectionLost(RabbitMQError(code: .timeout, scope: .connection, message: message), now: now)
                return
            }
            emit(.log(.warning, "request timed out; closing its channel", [LogKey.channel: "\(channel.number)"]))
            // Consumers of the channel end with this error, not silently.
            beginClose(channel, error: RabbitMQError(code: .timeout, scope: .channel, message: message), graceful: false, waiters: [], now: now)
        }
    }

    private enum PhaseDeadline {
        /// Nothing to wait for (connecting).
        case none
        /// This instant and nothing else (backing off).
        case only(ContinuousClock.Instant)
        /// This instant or an earlier one of the channels or heartbeats.
        case atLeast(ContinuousClock.Instant?)
    }

    /// The deadline of a recovering or closing connection's own step.
    @inline(never)
    private var phaseDeadline: PhaseDeadline {
        switch state {
        case .recovering(let plan):
            switch plan.step {
            case .backingOff(let until): .only(until)
            case .connecting: .none
            case .restoring(let restore): .atLeast(restore.pausedUntil)
            }
        case .closing(let closing): .atLeast(closing.deadline)
        default: .atLeast(nil)
        }
    }

    /// The earliest instant at which ``tick(now:)`` has something to do.
    ///
    /// Asked before every sleep of the I/O loop: the open phases read no payload of `state`
    /// (copying it is not free), and nothing here allocates.
    var nextDeadline: ContinuousClock.Instant? {
        var earliest: ContinuousClock.Instant?
        switch phase {
        case .connecting, .closed:
            return nil
        case .recovering, .closingOpen, .closingBlocked, .closingSent:
            switch phaseDeadline {
            case .none: return nil
            case .only(let instant): return instant
            case .atLeast(let instant): earliest = instant
            }
        case .open, .blocked:
            break
        }
        // The part every turn reaches, without optionals (see HeartbeatState.sendDue).
        var found = false
        var soonest = heartbeat.lastSent  // a placeholder until `found`
        if heartbeat.isOn {
            soonest = heartbeat.sendDue
            found = true
            if !heartbeat.checking {
                let silence = heartbeat.silenceDue
                if silence < soonest { soonest = silence }
            }
        }
        if !isBlocked {
            if !secretUpdates.isEmpty, let deadline = secretDeadline, !found || deadline < soonest {
                soonest = deadline
                found = true
            }
            for channel in channels.values where channel.hasPending {
                let deadline = channel.earliestPendingDeadline
                if !found || deadline < soonest {
                    soonest = deadline
                    found = true
                }
            }
        }
        return found ? earlier(earliest, soonest) : earliest
    }
}
