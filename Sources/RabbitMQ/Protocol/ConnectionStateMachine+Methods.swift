/// Methods from the broker: replies matched to their requests, the close handshakes,
/// consumer cancellation, blocking, and the content that completes on a channel.
extension ConnectionStateMachine {
    // MARK: Channel 0

    func connectionMethod(_ method: InboundMethod, now: ContinuousClock.Instant) {
        switch method {
        case .connectionClose(let close):
            emit(.send(0, .connectionCloseOk))
            refuseDeprecatedFeature(close)
            if case .closing = state {
                // Our close crossed the broker's: the connection is closed either way.
                terminate(nil, now: now)
                return
            }
            connectionLost(close.error(scope: .connection), now: now)
        case .connectionCloseOk:
            if case .closing(let closing) = state, closing.sentClose { terminate(nil, now: now) }
        case .connectionBlocked(let reason):
            blocked(reason: reason, now: now)
        case .connectionUnblocked:
            unblocked(now: now)
        case .connectionUpdateSecretOk:
            secretUpdated()
        default:
            connectionLost(
                RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected method \(Self.name(method)) on channel 0"),
                now: now)
        }
    }

    /// RabbitMQ 4 closes the whole connection (541) when a request uses a feature its
    /// configuration denies (a transient non-exclusive queue, global QoS: denied by default
    /// from 4.3). The close names the feature and the method, not the channel, so the
    /// request is the one in flight that uses that feature, and only if there is exactly one:
    /// it fails with a typed error that says which feature and what to do instead, not with
    /// "the connection was lost" (trying it again would only close the next connection too).
    /// It was never recorded, so recovery does not declare it. When recovery itself was
    /// restoring such an entity (recorded where the broker permitted it, before a failover to
    /// one that does not), the entity is forgotten and reported as not restored, so that the
    /// next attempt does not stumble on it again.
    private func refuseDeprecatedFeature(_ close: ServerClose) {
        guard close.replyCode == 541, let feature = RabbitMQError.deprecatedFeature(in: close.replyText) else { return }
        let advice: String
        let uses: (ChannelRequest) -> Bool
        switch feature {
        case "transient_nonexcl_queues":
            advice = "; declare the queue durable or exclusive (or as a quorum or stream queue)"
            uses = { if case .queueDeclare(_, false, false, false, _, _) = $0 { true } else { false } }
        case "global_qos":
            advice = "; set the prefetch per consumer (global: false)"
            uses = { if case .basicQos(_, true) = $0 { true } else { false } }
        default:
            return
        }
        func refusal(_ what: String) -> RabbitMQError {
            RabbitMQError(
                code: .deprecatedFeature, scope: .connection,
                message: "the broker refuses \(what): the deprecated feature \(feature) is not permitted by its configuration\(advice)",
                replyText: close.replyText, classID: close.classID, methodID: close.methodID)
        }
        if case .recovering(let plan) = state, case .restoring(let restore) = plan.step, let operation = restore.inFlight {
            switch operation {
            case .queue(let queue, _) where !queue.durable && !queue.exclusive && feature == "transient_nonexcl_queues":
                recordTopology { $0.deleteQueue(named: queue.name) }
                topologyFailed("queue \(queue.name)", refusal("the transient, non-exclusive queue '\(queue.name)'"))
            case .qos(let number, _, true) where feature == "global_qos":
                channel(number)?.forgetGlobalQos()
                topologyFailed("global prefetch of channel \(number)", refusal("a global prefetch on channel \(number)"))
            default:
                break
            }
            return
        }
        let candidates = sortedChannels().flatMap { channel in channel.applicationRequests(where: uses).map { (channel, $0) } }
        guard candidates.count == 1, let (channel, index) = candidates.first,
            let (request, waiter) = channel.takeApplicationRequest(at: index)
        else { return }
        let error = refusal(Self.summary(of: request))
        emit(.log(.warning, "the broker refused a deprecated feature and closed the connection", [LogKey.error: "\(error)"]))
        if let waiter { emit(.fail(waiter, error)) }
    }

    /// How an error names a request.
    static func summary(of request: ChannelRequest) -> String {
        switch request {
        case .queueDeclare(let name, _, let durable, let exclusive, _, _):
            "queue.declare of \(name.isEmpty ? "a server-named queue" : "'\(name)'") (\(durable ? "durable" : "transient"), \(exclusive ? "exclusive" : "not exclusive"))"
        case .basicQos(let count, let global): "basic.qos (prefetch \(count), global: \(global))"
        case .exchangeDeclare(let name, _, _, _, _, _, _): "exchange.declare of '\(name)'"
        default: "\(request)".prefix(while: { $0 != "(" }).description
        }
    }

    static func name(_ method: InboundMethod) -> String {
        guard let id = method.id else {
            if case .unexpected(let raw) = method { return "\(raw >> 16).\(raw & 0xFFFF)" }
            return "\(method)"
        }
        return "\(id)"
    }

    // MARK: Channels

    func channelMethod(_ number: UInt16, _ method: InboundMethod, now: ContinuousClock.Instant) {
        guard let channel = channel(number) else {
            emit(.log(.debug, "frame for an unknown channel ignored", [LogKey.channel: "\(number)"]))
            return
        }
        switch method {
        case .channelClose(let close):
            brokerClosed(channel, close, now: now)
        case .channelCloseOk:
            guard channel.phase == .closing, let closing = channel.closing else {
                connectionLost(
                    RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected channel.close-ok on channel \(number)"),
                    now: now)
                return
            }
            finishChannel(channel, error: closing.error, graceful: closing.graceful)
            // A channel that closed took its unconfirmed publishes with it.
            sendConnectionCloseIfDrained(now: now)
        case .basicAck(let tag, let multiple), .basicNack(let tag, let multiple):
            // Confirms mean something even after our channel.close: the broker sent them first.
            var resolved: [(ConfirmTicket, RabbitMQPublishOutcome)] = []
            let slots = confirm(channel, tag: tag, multiple: multiple, acked: method.id == .basicAck, now: now) { resolved.append(($0, $1)) }
            for (ticket, outcome) in resolved { emit(.resolveTicket(ticket, .success(outcome))) }
            if slots > 0, let shared = channel.shared { emit(.releaseConfirmSlots(shared, slots)) }
        case .basicCancel(let tag):
            brokerCancelled(tag, on: channel)
        case .basicCancelOk(let tag) where channel.phase == .closing:
            // The cancel was answered before our close: the consumer is gone from the broker
            // (and an auto-delete queue with it) even though its request was failed.
            forgetConsumer(tag, on: channel)
        default:
            // Between our channel.close and its close-ok, replies are to requests failed
            // when the close began.
            if channel.phase == .closing { return }
            reply(method, on: channel, now: now)
        }
    }

    /// Matches a reply to its request (see ``ChannelStateMachine/takeRequest(answeredBy:consumerTag:)``).
    private func reply(_ method: InboundMethod, on channel: ChannelStateMachine, now: ContinuousClock.Instant) {
        var consumerTag: String?
        if case .basicConsumeOk(let tag) = method { consumerTag = tag }
        if case .basicCancelOk(let tag) = method { consumerTag = tag }
        guard let id = method.id, let pending = channel.takeRequest(answeredBy: id, consumerTag: consumerTag) else {
            if channel.phase == .closing { return }
            connectionLost(
                RabbitMQError(
                    code: .protocolError, scope: .connection,
                    message: "unexpected method \(Self.name(method)) on channel \(channel.number)"),
                now: now)
            return
        }
        switch pending.kind {
        case .open(let waiter):
            channel.opened()
            if let waiter { emit(.succeed(waiter, .ok)) }
            if let closing = channel.closing, closing.afterOpen {
                channel.beginClosing(.init(error: closing.error, graceful: closing.graceful, waiters: closing.waiters))
                sendClose(channel, now: now)
            }
        case .request(let request, let waiter):
            let reply = method.reply
            record(request, reply: reply, on: channel)
            if let waiter { emit(.succeed(waiter, reply)) }
        case .consume(let tag):
            consumerRegistered(tag, on: channel, now: now)
        case .cancel(let tag):
            forgetConsumer(tag, on: channel)
        case .close:
            break
        }
        if pending.isRecovery { recoveryReplied(channel.number, .success(method.reply), now: now) }
    }

    private func consumerRegistered(_ tag: String, on channel: ChannelStateMachine, now: ContinuousClock.Instant) {
        guard let consumer = channel.consumers[tag] else { return }
        if case .registering(let waiter) = consumer.state, let waiter { emit(.succeed(waiter, .consumerTag(tag))) }
        channel.updateConsumer(tag) { $0.state = .active }
        if consumer.cancelRequested, channel.isOpen {
            sendCancel(tag, on: channel, waiters: consumer.cancelWaiters, now: now)
        }
    }

    /// The consumer is gone from the broker (cancel-ok, or cancelled while the connection was
    /// down): its sequence ends, waiting callers are answered, an auto-delete queue nobody
    /// else consumes is forgotten.
    func forgetConsumer(_ tag: String, on channel: ChannelStateMachine, error: RabbitMQError? = nil) {
        guard let consumer = channel.removeConsumer(tag) else { return }
        answerWaiters(of: consumer, cancelled: true, error: error ?? Self.channelClosedByApplication)
        emit(.finishConsumer(consumer.sink, error))
        forgetAutoDeleteQueue(consumer.request.queue)
    }

    private func answerWaiters(
        of consumer: ChannelStateMachine.Consumer, cancelled: Bool, error: RabbitMQError
    ) {
        switch consumer.state {
        case .registering(let waiter):
            if let waiter { emit(.fail(waiter, error)) }
        case .cancelling(let waiters):
            for waiter in waiters { emit(.succeed(waiter, .ok)) }
        case .active, .dormant:
            break
        }
        for waiter in consumer.cancelWaiters { emit(.succeed(waiter, .ok)) }
    }

    /// `basic.cancel` from the broker (consumer_cancel_notify): its queue was deleted or
    /// became unavailable. No cancel-ok is due (the broker sends it nowait).
    private func brokerCancelled(_ tag: String, on channel: ChannelStateMachine) {
        guard channel.consumers[tag] != nil else { return }
        emit(.log(.info, "consumer cancelled by the broker", [LogKey.consumerTag: tag]))
        forgetConsumer(
            tag, on: channel,
            error: RabbitMQError(
                code: .consumerCancelled, message: "the broker cancelled consumer \(tag) (its queue was deleted or became unavailable)"))
    }

    /// The broker closed the channel (404, 406, ...): close-ok, then everything on it fails
    /// with the broker's error. The connection and its other channels go on.
    private func brokerClosed(_ channel: ChannelStateMachine, _ close: ServerClose, now: ContinuousClock.Instant) {
        emit(.send(channel.number, .channelCloseOk))
        if channel.phase == .closing, let closing = channel.closing {
            // Both sides closed at once: ours was asked for first.
            finishChannel(channel, error: closing.error, graceful: closing.graceful)
            return
        }
        let error = close.error(scope: .channel)
        emit(.log(.info, "channel closed by the broker", [LogKey.channel: "\(channel.number)", LogKey.error: "\(error)"]))
        let hadRecoveryRequest = finishChannel(channel, error: error, graceful: false)
        if hadRecoveryRequest { recoveryReplied(channel.number, .failure(error), now: now) }
    }

    /// Sends `channel.close` and fails what waits on the channel: requests and consumes with
    /// `error`; cancels succeed (the close cancels). Consumers end at close-ok, normally when
    /// `graceful`, else with `error`.
    func beginClose(
        _ channel: ChannelStateMachine, error: RabbitMQError, graceful: Bool, waiters: [Waiter], now: ContinuousClock.Instant
    ) {
        channel.beginClosing(.init(error: error, graceful: graceful, waiters: waiters))
        if let shared = channel.shared { emit(.markChannelClosed(shared, error)) }
        sendClose(channel, now: now)
    }

    private func sendClose(_ channel: ChannelStateMachine, now: ContinuousClock.Instant) {
        let error = channel.closing?.error ?? Self.channelClosedByApplication
        let hadRecoveryRequest = failPending(of: channel, error)
        emit(.send(channel.number, .channelClose(replyCode: 200, replyText: "Goodbye")))
        channel.enqueue(.close, expecting: (.channelCloseOk, .channelCloseOk), deadline: now.advanced(by: settings.requestTimeout))
        // The plan waited for a reply on this channel (its prefetch, confirm mode or a
        // consumer): that reply is now moot, and the plan goes on without it.
        if hadRecoveryRequest { recoveryAbandoned(channel.number, now: now) }
    }

    /// Fails the requests waiting on a channel (the close or the loss makes them moot).
    /// Returns whether a recovery request was among them.
    @discardableResult
    private func failPending(of channel: ChannelStateMachine, _ error: RabbitMQError) -> Bool {
        var hadRecoveryRequest = false
        for pending in channel.takeAllPending() {
            if pending.isRecovery { hadRecoveryRequest = true }
            switch pending.kind {
            case .open(let waiter), .request(_, let waiter):
                if let waiter { emit(.fail(waiter, error)) }
            case .consume(let tag) where pending.isRecovery:
                // A consumer the plan was restoring: the application's consumer, which ends at
                // close-ok like every other on this channel (and forgets its auto-delete queue).
                channel.updateConsumer(tag) { $0.state = .dormant }
            case .consume(let tag):
                // Never registered: nobody will ever iterate it.
                guard let consumer = channel.removeConsumer(tag) else { continue }
                answerWaiters(of: consumer, cancelled: false, error: error)
                emit(.finishConsumer(consumer.sink, error))
            case .cancel, .close:
                // A cancel is as good as done once the channel closes; consumers end at close-ok.
                break
            }
        }
        return hadRecoveryRequest
    }

    /// The channel is gone (close-ok, the broker's close, or the end of the connection):
    /// everything waiting on it is answered and its number freed. Returns whether a
    /// recovery request was waiting on it.
    @discardableResult
    func finishChannel(
        _ channel: ChannelStateMachine, error: RabbitMQError, graceful: Bool, forgetConsumers: Bool = true
    ) -> Bool {
        removeChannel(channel.number)
        freeChannelNumber(channel.number)
        if let shared = channel.shared { emit(.markChannelClosed(shared, error)) }
        channel.content = nil
        var hadRecoveryRequest = false
        for pending in channel.takeAllPending() {
            if pending.isRecovery { hadRecoveryRequest = true }
            switch pending.kind {
            case .open(let waiter), .request(_, let waiter):
                if let waiter { emit(.fail(waiter, error)) }
            case .consume, .cancel, .close:
                break
            }
        }
        for consumer in channel.removeAllConsumers() {
            answerWaiters(of: consumer, cancelled: true, error: error)
            emit(.finishConsumer(consumer.sink, graceful ? nil : error))
            if forgetConsumers { forgetAutoDeleteQueue(consumer.request.queue) }
        }
        failUnconfirmed(channel.unconfirmed.takeAll(), on: channel, error: error)
        failUnconfirmed(channel.takeRepublish(), on: channel, error: error)
        for waiter in channel.closing?.waiters ?? [] { emit(.succeed(waiter, .ok)) }
        return hadRecoveryRequest
    }

    // MARK: Topology bookkeeping

    /// Keeps the topology registry in step with what the broker accepted.
    private func record(_ request: ChannelRequest, reply: ChannelReply, on channel: ChannelStateMachine) {
        switch request {
        case .exchangeDeclare(let name, let type, let passive, let durable, let autoDelete, let isInternal, let arguments):
            guard !passive, !name.isEmpty else { return }
            recordTopology {
                $0.record(.init(name: name, type: type, durable: durable, autoDelete: autoDelete, isInternal: isInternal, arguments: arguments))
            }
        case .exchangeDelete(let name, _):
            recordTopology { $0.deleteExchange(named: name) }
        case .exchangeBind(let destination, let source, let routingKey, let arguments):
            recordTopology {
                $0.record(.init(destinationKind: .exchange, destination: destination, source: source, routingKey: routingKey, arguments: arguments))
            }
        case .exchangeUnbind(let destination, let source, let routingKey, let arguments):
            recordTopology {
                $0.unbind(
                    .init(destinationKind: .exchange, destination: destination, source: source, routingKey: routingKey, arguments: arguments))
            }
        case .queueDeclare(let name, let passive, let durable, let exclusive, let autoDelete, let arguments):
            guard !passive, case .queueDeclared(let result) = reply else { return }
            recordTopology {
                $0.record(
                    .init(requestedName: name, name: result.name, durable: durable, exclusive: exclusive, autoDelete: autoDelete, arguments: arguments))
            }
        case .queueDelete(let name, _, _):
            recordTopology { $0.deleteQueue(named: name) }
        case .queueBind(let queue, let exchange, let routingKey, let arguments):
            recordTopology {
                $0.record(.init(destinationKind: .queue, destination: queue, source: exchange, routingKey: routingKey, arguments: arguments))
            }
        case .queueUnbind(let queue, let exchange, let routingKey, let arguments):
            recordTopology {
                $0.unbind(.init(destinationKind: .queue, destination: queue, source: exchange, routingKey: routingKey, arguments: arguments))
            }
        case .basicQos(let prefetchCount, let global):
            channel.recordQos(prefetchCount: prefetchCount, global: global)
        case .queuePurge, .basicGet, .confirmSelect:
            break
        }
    }

    /// The broker deletes an auto-delete queue when its last consumer goes (cancelled, or
    /// its channel closed): forget it too, unless another consumer of this connection still
    /// consumes it. Auto-delete exchanges that lost their last binding with it go as well.
    func forgetAutoDeleteQueue(_ name: String) {
        guard let queue = registry.queue(named: name), queue.autoDelete else { return }
        let stillConsumed = channels.values.contains { channel in
            channel.consumers.values.contains { $0.request.queue == name }
        }
        if !stillConsumed { recordTopology { $0.deleteQueue(named: name) } }
    }

    // MARK: Content


    /// A message is complete on `channel` (``ContentProgress/complete``): a delivery for its
    /// consumer (returned to the loop, the hot path), a returned message, or the answer to a
    /// `basic.get`.
    @inline(__always)
    func contentComplete(_ channel: ChannelStateMachine) -> ContentOutcome {
        guard let content = channel.content.take() else { return .none }
        let kind = content.kind
        let undecodable: RabbitMQError? = content.undecodable ? FieldTableTooDeep.error : nil
        var message = content.message
        // Ends `content` here, so `message` is the storage's only owner and is changed in place.
        _ = consume content
        switch kind {
        case .discard:
            return .none
        case .deliver:
            guard let sink = channel.sink(forConsumer: message.consumerTag) else {
                emit(.log(.debug, "delivery for an unknown consumer ignored", [LogKey.consumerTag: message.consumerTag]))
                return .none
            }
            if let undecodable {
                refuseUndecodable(message, on: channel, settleable: !sink.noAck, error: undecodable)
                return .none
            }
            if !sink.noAck, let shared = channel.shared { message.settleOn(shared) }
            return .deliver(sink, message)
        case .returned(let replyCode, let replyText):
            if let undecodable {
                emit(.log(.error, "a returned message with undecodable properties was dropped", [LogKey.error: "\(undecodable)"]))
                return .none
            }
            var properties = message.properties
            var sequence: UInt64?
            if let value = properties.headers?[Unconfirmed.returnTagHeader] {
                if case .int64(let number) = value { sequence = UInt64(exactly: number) }
                properties.headers![Unconfirmed.returnTagHeader] = nil
                if properties.headers!.isEmpty { properties.headers = nil }
            }
            let returned = RabbitMQReturnedMessage(
                replyCode: replyCode, replyText: replyText, exchange: message.exchange, routingKey: message.routingKey,
                properties: properties, body: message.body)
            if channel.confirmMode { _ = channel.attachReturn(returned, sequence: sequence) }
            if let shared = channel.shared { emit(.returned(shared, returned)) }
            return .none
        case .get:
            guard let (noAck, waiter) = channel.takeGetRequest() else {
                return .protocolError(
                    RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected basic.get-ok on channel \(channel.number)"))
            }
            if let undecodable {
                refuseUndecodable(message, on: channel, settleable: !noAck, error: undecodable)
                if let waiter { emit(.fail(waiter, undecodable)) }
                return .none
            }
            if !noAck, let shared = channel.shared { message.settleOn(shared) }
            if let waiter { emit(.succeed(waiter, .delivery(message))) }
            return .none
        }
    }

    /// A message whose properties cannot be decoded (a field table nested too deep) is never
    /// handed out: rejected without requeue (dead-lettered, when the queue has a dead-letter
    /// exchange) so it cannot come back in a loop.
    @inline(never)
    private func refuseUndecodable(
        _ message: RabbitMQDelivery, on channel: ChannelStateMachine, settleable: Bool, error: RabbitMQError
    ) {
        emit(
            .log(
                .error, "a message with undecodable properties was rejected without requeue",
                [LogKey.channel: "\(channel.number)", LogKey.consumerTag: message.consumerTag, LogKey.error: "\(error)"]))
        if settleable { emit(.send(channel.number, .basicReject(deliveryTag: message.deliveryTag, requeue: false))) }
    }

    /// A delivery the consumer's buffer refused (nobody iterates it any more): the
    /// acknowledgement that gives it back at once, instead of leaving it unacknowledged
    /// until the channel closes.
    @inline(__always)
    func refused(_ delivery: RabbitMQDelivery, channel: UInt16) -> OutboundMethod? {
        delivery.isSettleable ? .basicReject(deliveryTag: delivery.deliveryTag, requeue: true) : nil
    }
}

/// What a completed message turned into (not nested in the generic machine: a generic
/// enum costs a metadata lookup per message).
enum ContentOutcome {
    /// A delivery to hand to a consumer.
    case deliver(ConsumerSink, RabbitMQDelivery)
    /// Handled (a return, a `basic.get` answer) or dropped.
    case none
    /// The broker broke the protocol: the connection is unusable.
    case protocolError(RabbitMQError)
}
