import Logging

/// Carrying out what the protocol core decided, in order. Actions that report a result (a
/// connect attempt, the kernel's view of the socket) feed it back as an event; what that
/// event decides runs after the actions already in hand.
extension IOLoop {
    func executeActions() {
        while !machine.actions.isEmpty {
            machine.takeActions(into: &actions)
            for action in actions { execute(action) }
        }
        actions.removeAll(keepingCapacity: true)
    }

    private func execute(_ action: ConnectionAction) {
        switch action {
        case .send(let channel, let method):
            send(method, on: channel)
        case .sendHeartbeat:
            guard let connection else { return }
            wrote = true
            do {
                try connection.sendHeartbeat()
            } catch {
                lost(error)
            }
        case .publish(let number, let message, let returnTag, let holdsRoom):
            guard let channel = machine.channel(number) else {
                if holdsRoom { core.releasePublishes(1) }
                return
            }
            write(message, on: channel, returnTag: returnTag, holdsRoom: holdsRoom)
        case .releasePublishRoom(let count):
            core.releasePublishes(count)
        case .succeed(let waiter, let reply):
            waiter.succeed(reply)
        case .fail(let waiter, let error):
            waiter.fail(error)
        case .finishConsumer(let sink, let error):
            sink.buffer.finish(throwing: error)
        case .dropStaleDeliveries(let sink, let epoch):
            sink.buffer.dropStale(before: epoch)
        case .resolveTicket(let ticket, let result):
            ticket.resolve(result)
        case .releaseConfirmSlots(let shared, let count):
            shared.releaseConfirmSlots(count)
        case .returned(let shared, let message):
            tally.returned &+= 1
            shared.emitReturn(message)
        case .markChannelClosed(let shared, let error):
            shared.markClosed(error)
        case .channelGone(let number):
            tally.gaugesMayHaveMoved = true
            connection?.channelClosed(number)
        case .emit(let event):
            if case .queueRenamed(let old, let new) = event { core.recordRename(from: old, to: new) }
            metrics?.observe(event, now: clock.now)
            core.emit(event)
        case .setPhase(let phase):
            core.setPhase(phase)
        case .checkPeerSilence:
            // rabbitmq-c takes heartbeat frames without telling: the kernel knows when bytes
            // last arrived. When it cannot tell, the core's own count stands.
            let silence = connection?.silence ?? machine.heartbeat.interval.map { $0 * 2 } ?? .zero
            machine.peerSilence(silence, now: clock.now)
        case .connect(let attempt):
            connectAttempt(attempt)
        case .storeSecret(let secret):
            configuration.password = secret
        case .closeSocket:
            dropConnection()
        case .terminate(let error):
            finished = true
            let remaining = core.terminate(error ?? Machine.closedByApplication)
            // Commands that were still queued are answered too (the core refuses them now).
            commands.append(contentsOf: remaining)
        case .finishEvents:
            core.finishEvents()
        case .log(let level, let message, let metadata):
            logger.log(level: level.swiftLog, "\(message)", metadata: metadata.mapValues { .string($0) })
        }
    }
}

extension LogLevel {
    var swiftLog: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .warning: .warning
        case .error: .error
        }
    }
}
