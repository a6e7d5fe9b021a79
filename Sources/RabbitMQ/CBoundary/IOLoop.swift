import CRabbitMQ
import Glibc
import Logging
import Metrics

/// The thread that owns one connection: it reads frames and turns them into events for the
/// protocol core (``ConnectionStateMachine``), hands it the commands other threads queued in
/// the ``ConnectionCore``, tells it the time, and carries out what it decides. It decides
/// nothing itself.
///
/// Each turn it drains the frames rabbitmq-c can give without waiting, runs queued commands,
/// reports deadlines, writes what is buffered, and sleeps in `poll()` on the socket (and its
/// writability while bytes wait) and an eventfd until the core's next deadline. It resumes
/// continuations and yields into buffers and streams; the only user code that runs here is
/// that of tasks which chose to (``RabbitMQConnectionExecutor``), between reads and commands.
final class IOLoop {
    typealias Machine = ConnectionStateMachine

    let core: ConnectionCore
    let executor: RabbitMQConnectionExecutor
    /// Jobs taken from the core, run in this turn.
    @exclusivity(unchecked) var jobs: [UnownedJob] = []
    /// The settings connect attempts use; its password changes with ``RabbitMQConnection/updateSecret(_:reason:)``.
    @exclusivity(unchecked) var configuration: RabbitMQConfiguration
    var logger: Logger
    let machine: Machine
    /// The connection to the broker; nil while recovery waits between attempts.
    @exclusivity(unchecked) var connection: CConnection?
    let scratch = ScratchPool()
    @exclusivity(unchecked) var commands: [Command] = []
    @exclusivity(unchecked) var actions: [ConnectionAction] = []
    /// Consumers whose iterator waits for deliveries that arrived this turn: woken once, at
    /// the end of the read turn, with everything that arrived (not once per message).
    @exclusivity(unchecked) var consumersToWake: [DeliveryBuffer] = []
    /// Something was written (or buffered to write) this turn: no heartbeat is due.
    @exclusivity(unchecked) var wrote = false
    /// The writer holds bytes the socket did not take: poll for writability.
    @exclusivity(unchecked) var wantsWrite = false
    /// The terminate action ran: the loop ends once the commands in hand are answered.
    @exclusivity(unchecked) var finished = false
    let clock = ContinuousClock()
    /// Counted on the hot paths, reported to ``metrics`` once per turn.
    @exclusivity(unchecked) var tally = MetricsTally()
    /// Made once the connection has opened; nil with swift-metrics' no-op backend.
    @exclusivity(unchecked) var metrics: ConnectionMetrics?
    var random = SystemRandomNumberGenerator()

    /// Frames read per drain before commands get a turn.
    static let frameBudget = 256
    /// Publishes sent between two drains, so confirms and deliveries keep flowing.
    static let publishBatch = 128

    private init(core: ConnectionCore, executor: RabbitMQConnectionExecutor) {
        self.core = core
        self.executor = executor
        self.configuration = core.configuration
        self.logger = core.logger
        var generator = SystemRandomNumberGenerator()
        machine = Machine(
            settings: .init(core.configuration),
            allocateChannel: { [core] in core.allocateChannelNumber() },
            releaseChannel: { [core] in core.releaseChannel($0) },
            random: { Double.random(in: 0..<1, using: &generator) })
    }

    // MARK: Thread

    static func makeWakeDescriptor() throws(RabbitMQError) -> Int32 {
        let descriptor = crmq_eventfd()
        guard descriptor >= 0 else {
            throw RabbitMQError(code: .library, message: "eventfd failed: errno \(errno)")
        }
        return descriptor
    }

    /// Starts the I/O thread; `onConnect` resumes once the connection is open or has failed.
    static func start(
        core: ConnectionCore, executor: RabbitMQConnectionExecutor, onConnect: CheckedContinuation<Void, any Error>
    ) {
        let box = Unmanaged.passRetained(StartBox(core: core, executor: executor, onConnect: onConnect)).toOpaque()
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, stackSize(frameMax: core.configuration.frameMax))
        let status = pthread_create(&thread, &attributes, ioThreadMain, box)
        if status != 0 {
            Unmanaged<StartBox>.fromOpaque(box).release()
            onConnect.resume(throwing: RabbitMQError(code: .library, message: "pthread_create failed: \(status)"))
            return
        }
        pthread_detach(thread)
    }

    /// The I/O thread's stack, set rather than inherited from `ulimit -s`. rabbitmq-c before
    /// 0.14 decodes nested tables and arrays by recursion without a limit, before our
    /// ``RabbitMQFieldTable/maxDepth`` check sees them: a level costs a frame 5 bytes and
    /// the decoder about 100 bytes of stack (0.11 overflowed 2 MiB at some 22,000 levels), so
    /// a broker's frame of frame_max bytes may need 26 times as much. 8 MiB for the rest,
    /// at most 256 MiB of address space in all (pages are only used when touched).
    static func stackSize(frameMax: Int) -> Int {
        min(8 << 20 + 26 * max(frameMax, 0), 256 << 20)
    }

    fileprivate final class StartBox: Sendable {
        let core: ConnectionCore
        let executor: RabbitMQConnectionExecutor
        let onConnect: CheckedContinuation<Void, any Error>
        init(core: ConnectionCore, executor: RabbitMQConnectionExecutor, onConnect: CheckedContinuation<Void, any Error>) {
            self.core = core
            self.executor = executor
            self.onConnect = onConnect
        }
    }

    fileprivate static func threadMain(_ box: StartBox) {
        crmq_set_thread_name(box.core.threadName)
        // However the thread ends, tasks that prefer its executor go on elsewhere.
        defer { retireExecutor(box.core) }
        let loop = IOLoop(core: box.core, executor: box.executor)
        let endpoint: RabbitMQConfiguration.Endpoint
        do {
            endpoint = try loop.connect()
        } catch {
            _ = box.core.terminate(error)
            box.core.finishEvents()
            SanitizerSync.release(box.core)
            box.onConnect.resume(throwing: error)
            return
        }
        loop.metrics = ConnectionMetrics.make(
            connectionName: box.core.name, factory: box.core.configuration.metricsFactory ?? MetricsSystem.factory)
        loop.machine.connected(heartbeat: .seconds(loop.core.negotiated.heartbeat), endpoint: endpoint.description, now: loop.clock.now)
        loop.executeActions()
        SanitizerSync.release(box.core)
        box.onConnect.resume()
        loop.run()
    }

    // MARK: Loop

    func run() {
        var descriptors = [
            pollfd(fd: core.wakeDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: -1, events: 0, revents: 0),
        ]
        while !finished {
            var busy = false
            if let connection, connection.mayHaveInput || connection.hasBufferedInput { busy = drainFrames() }
            // Tasks resumed by what was just read run before the commands, so that what they
            // send goes out in this turn.
            busy = runJobs() || busy
            busy = runCommands() || busy
            let now = clock.now
            machine.tick(now: now)
            core.expireWaiters(now: now)
            executeActions()
            flush(now: now)
            if !tally.isEmpty { reportMetrics() }
            if finished { break }
            if busy || connection?.hasBufferedInput == true || !core.prepareToSleep() {
                turnsWithoutPoll += 1
                lookForInputWhileBusy()
                continue
            }
            turnsWithoutPoll = 0
            descriptors[0].revents = 0
            var count: nfds_t = 1
            if let connection {
                descriptors[1] = pollfd(fd: connection.socketDescriptor, events: Int16(wantsWrite ? POLLIN | POLLOUT : POLLIN), revents: 0)
                count = 2
            }
            let result = poll(&descriptors, count, timeout(now: now))
            // Awake: commands queued from now on need no eventfd write (a resumed caller's next
            // request, typically, while this turn still reads).
            core.markAwake()
            if result < 0 && errno != EINTR {
                lost(RabbitMQError(code: .socketError, scope: .connection, message: "poll failed: errno \(errno)"))
            }
            if count == 2, descriptors[1].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { socketIsReadable() }
            if descriptors[0].revents != 0 {
                var counter: UInt64 = 0
                _ = read(core.wakeDescriptor, &counter, 8)
            }
        }
        // The terminate action hands back the commands still queued in the core; when it
        // came from anywhere but `runCommands` (a tick, a flush, a connect attempt that gave
        // up) they are still here. The machine is closed: each is refused, once.
        while !commands.isEmpty {
            _ = runCommands()
            executeActions()
        }
        reportMetrics()
        metrics?.finish()
    }

    /// Hands the turn's counts to the metrics backend, with the gauges when they may have
    /// moved; without one, forgets them.
    func reportMetrics() {
        guard let metrics else {
            tally = MetricsTally()
            return
        }
        metrics.report(&tally) {
            var outstanding = 0
            for channel in machine.channels.values { outstanding += channel.unconfirmed.count }
            return ConnectionMetrics.Gauges(
                channels: machine.channels.count, publishBuffered: core.publishesBuffered,
                confirmsOutstanding: outstanding)
        }
    }

    /// Turns in a row that went on without sleeping in `poll()`, which is what tells the loop
    /// that the socket has input (``CConnection/mayHaveInput``).
    @exclusivity(unchecked) var turnsWithoutPoll = 0

    /// A loop that stays busy (tasks on its executor that keep yielding, a stream of commands)
    /// never reaches `poll()`: every other such turn it looks at the socket without waiting,
    /// so that answers and deliveries are still read. Not on the first busy turn: a round
    /// trip's turn (read the answer, run the resumed task, send its next request) is followed
    /// by a sleep, whose `poll()` sees the next answer.
    private func lookForInputWhileBusy() {
        guard turnsWithoutPoll >= 2, let connection, !connection.mayHaveInput else { return }
        turnsWithoutPoll = 0
        var probe = pollfd(fd: connection.socketDescriptor, events: Int16(POLLIN), revents: 0)
        if poll(&probe, 1, 0) > 0, probe.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { socketIsReadable() }
    }

    /// `poll()` (asleep or probing) found the socket readable, or closed: the next turn reads.
    private func socketIsReadable() {
        connection?.mayHaveInput = true
        // Anything that arrives counts (heartbeat frames never reach us: rabbitmq-c takes them).
        machine.heartbeat.received(clock.now)
    }

    /// Milliseconds until the earliest deadline of the core or of a waiting publisher; -1
    /// (no timer) when there is none: idle means asleep.
    private func timeout(now: ContinuousClock.Instant) -> Int32 {
        // Asked before every sleep: no arrays.
        guard let earliest = earlier(machine.nextDeadline, core.earliestWaiterDeadline) else { return -1 }
        let remaining = now.duration(to: earliest)
        guard remaining > .zero else { return 0 }
        let (seconds, attoseconds) = remaining.components
        let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(min(milliseconds, Int64(Int32.max)))
    }

    /// Reads and dispatches frames until none is buffered; returns true when the budget ran out.
    func drainFrames(budget: Int = IOLoop.frameBudget) -> Bool {
        guard let current = connection else { return false }
        defer { wakeConsumers() }
        var read = 0
        while read < budget {
            let type: FrameType?
            do {
                type = try current.nextFrame()
            } catch {
                lost(error)
                return false
            }
            guard let type else {
                current.mayHaveInput = false
                break
            }
            read += 1
            dispatch(type, from: current)
            // A protocol error or a close may have ended this connection.
            guard connection === current else { return false }
            // Over TCP, what rabbitmq-c has not buffered `poll()` reports: no read to find out
            // that there is nothing more.
            if current.pollSeesAllInput && !current.hasBufferedInput {
                current.mayHaveInput = false
                break
            }
        }
        if read > 0 { machine.heartbeat.received(clock.now) }
        return read == budget
    }

    func wakeConsumers() {
        guard !consumersToWake.isEmpty else { return }
        for buffer in consumersToWake { buffer.wake() }
        consumersToWake.removeAll(keepingCapacity: true)
    }

    // MARK: Executor

    /// Runs the jobs of tasks that prefer this connection's executor; returns true when
    /// there were any.
    func runJobs() -> Bool {
        core.takeJobs(into: &jobs)
        guard !jobs.isEmpty else { return false }
        let executor = self.executor.asUnownedTaskExecutor()
        for job in jobs { job.runSynchronously(on: executor) }
        jobs.removeAll(keepingCapacity: true)
        return true
    }

    /// The thread ends: jobs still queued, and any later ones, run on the global executor.
    fileprivate static func retireExecutor(_ core: ConnectionCore) {
        for job in core.retireExecutor() { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    // MARK: Frames

    /// Turns the frame just read into an event for the core.
    @inline(__always)
    func dispatch(_ type: FrameType, from connection: CConnection) {
        let number = connection.frameChannel
        switch type {
        case .body:
            // Content frames make no actions, but when a message completes (see progress).
            guard let channel = machine.channel(number) else { return }
            progress(channel, channel.contentBody(connection.body))
            return
        case .header:
            guard let channel = machine.channel(number) else { return }
            var undecodable = false
            var refusal: RabbitMQError?
            let properties = connection.properties(undecodable: &undecodable, refusal: &refusal)
            if let refusal {
                lost(refusal)
                return
            }
            progress(channel, channel.contentHeader(bodySize: connection.bodySize, properties: properties, undecodable: undecodable))
            return
        case .deliver:
            beginContent(number, .deliver, connection.delivery(epoch: machine.epoch))
            return
        case .returned:
            let (replyCode, replyText, message) = connection.returned(epoch: machine.epoch)
            beginContent(number, .returned(replyCode: replyCode, replyText: replyText), message)
            return
        case .getOk:
            beginContent(number, .get, connection.getOk(epoch: machine.epoch))
            return
        case .method:
            let method = connection.method()
            if number == 0 {
                machine.connectionMethod(method, now: clock.now)
            } else if case .basicAck(let tag, let multiple) = method {
                confirm(number, tag: tag, multiple: multiple, acked: true)
            } else if case .basicNack(let tag, let multiple) = method {
                confirm(number, tag: tag, multiple: multiple, acked: false)
            } else {
                machine.channelMethod(number, method, now: clock.now)
            }
        }
        if !machine.actions.isEmpty { executeActions() }
    }

    @inline(__always)
    private func confirm(_ number: UInt16, tag: UInt64, multiple: Bool, acked: Bool) {
        guard let channel = machine.channel(number), let shared = channel.shared else {
            machine.channelMethod(
                number, acked ? .basicAck(deliveryTag: tag, multiple: multiple) : .basicNack(deliveryTag: tag, multiple: multiple),
                now: clock.now)
            return
        }
        let before = channel.unconfirmed.count
        let slots = machine.confirm(channel, tag: tag, multiple: multiple, acked: acked, now: clock.now) { ticket, outcome in
            ticket.resolve(.success(outcome))
        }
        let confirmed = before - channel.unconfirmed.count
        if acked { tally.confirmed &+= confirmed } else { tally.nacked &+= confirmed }
        tally.gaugesMayHaveMoved = true
        shared.releaseConfirmSlots(slots)
    }

    @inline(__always)
    private func beginContent(_ number: UInt16, _ kind: ContentAssembly.Kind, _ delivery: consuming RabbitMQDelivery) {
        guard let channel = machine.channel(number) else { return }
        if let violation = channel.beginContent(kind, delivery) {
            lost(RabbitMQError(code: .protocolError, scope: .connection, message: violation))
        }
    }

    @inline(__always)
    private func progress(_ channel: ConnectionStateMachine.ChannelMachine, _ progress: ContentProgress) {
        switch progress {
        case .incomplete:
            return
        case .protocolError(let violation):
            lost(RabbitMQError(code: .protocolError, scope: .connection, message: violation))
        case .complete:
            switch machine.contentComplete(channel) {
            case .deliver(let sink, let delivery):
                deliver(delivery, to: sink, on: channel.number)
            case .none:
                // A returned message, a get's answer, or a refusal: their actions, now.
                if !machine.actions.isEmpty { executeActions() }
            case .protocolError(let error):
                lost(error)
            }
        }
    }

    @inline(__always)
    private func deliver(_ delivery: RabbitMQDelivery, to sink: ConsumerSink, on number: UInt16) {
        tally.delivered &+= 1
        if delivery.redelivered { tally.redelivered &+= 1 }
        if let handler = sink.handler {
            handler(delivery)
            return
        }
        switch sink.buffer.push(delivery) {
        case .buffered:
            break
        case .needsWake:
            consumersToWake.append(sink.buffer)
        case .terminated:
            if let refusal = machine.refused(delivery, channel: number) {
                // Settled by the library, not the application: kept out of the counts, but
                // known, so that a later `multiple` acknowledgement does not count it.
                if metrics != nil, let channel = machine.channel(number) {
                    _ = channel.settlements.settle(tag: delivery.deliveryTag, multiple: false, epoch: machine.epoch)
                }
                send(refusal, on: number)
            }
        }
    }

    // MARK: Commands

    /// Runs queued commands; returns true when there may be more work right away.
    func runCommands() -> Bool {
        core.takeCommands(into: &commands)
        guard !commands.isEmpty else { return false }
        // Publishes held (blocked, recovering) or failed fill or empty the buffer too.
        tally.gaugesMayHaveMoved = true
        let now = clock.now
        var sentSinceDrain = 0
        var index = 0
        while index < commands.count {
            // Moved out (a payload-free command left in its place), not copied: a publish
            // carries its whole message.
            var command = Command.close(nil)
            swap(&command, &commands[index])
            index += 1
            switch command {
            case .publish(let shared, let message, let ticket, let holdsSlot):
                publish(shared, message, ticket: ticket, holdsSlot: holdsSlot)
                sentSinceDrain += 1
                if sentSinceDrain >= Self.publishBatch {
                    sentSinceDrain = 0
                    flush(now: now)
                    _ = drainFrames(budget: 64)
                }
            case .publishBefore(let shared, let message, let holdsSlot, let deadline):
                publish(shared, message, holdsSlot: holdsSlot, before: deadline, now: now)
            case .settle(let shared, let settlement):
                if let number = machine.settle(shared, epoch: settlement.epoch) {
                    count(settlement, on: number)
                    send(OutboundMethod(settlement), on: number)
                }
            case .openChannel(let shared, let waiter):
                machine.openChannel(shared, waiter: waiter, now: now)
                tally.gaugesMayHaveMoved = true
            case .request(let shared, let request, let waiter):
                machine.request(shared, request, waiter: waiter, now: now)
            case .consume(let shared, let request, let sink, let waiter):
                machine.consume(shared, request, sink: sink, waiter: waiter, now: now)
            case .cancelConsumer(let shared, let tag, let waiter):
                machine.cancelConsumer(shared, consumerTag: tag, waiter: waiter, now: now)
            case .closeChannel(let shared, let waiter):
                machine.closeChannel(shared, waiter: waiter, now: now)
            case .close(let waiter):
                machine.close(waiter: waiter, now: now)
            case .updateSecret(let secret, let reason, let waiter):
                machine.updateSecret(
                    secret, reason: reason, wire: connection?.canUpdateSecret ?? false, waiter: waiter, now: now)
            }
            if !machine.actions.isEmpty { executeActions() }
            // The terminate action may have handed back commands still queued in the core.
        }
        commands.removeAll(keepingCapacity: true)
        return true
    }

    /// Counts the deliveries an acknowledgement settles, by its kind.
    @inline(__always)
    private func count(_ settlement: Settlement, on number: UInt16) {
        guard metrics != nil, let channel = machine.channel(number) else { return }
        let settled = channel.settlements.settle(tag: settlement.deliveryTag, multiple: settlement.multiple, epoch: settlement.epoch)
        switch settlement.kind {
        case .ack: tally.acked &+= settled
        case .nack: tally.consumerNacked &+= settled
        case .reject: tally.rejected &+= settled
        }
    }

    /// The publish hot path: the core routes it; this writes it.
    @inline(__always)
    func publish(_ shared: ChannelShared, _ message: OutboundMessage, ticket: ConfirmTicket?, holdsSlot: Bool) {
        switch machine.routePublish(shared) {
        case .send(let channel):
            let returnTag = machine.recordPublish(on: channel, message, ticket: ticket, holdsSlot: holdsSlot)
            write(message, on: channel, returnTag: returnTag, holdsRoom: true)
        case .hold:
            machine.hold(shared, message, ticket: ticket, holdsSlot: holdsSlot)
        case .fail(let error):
            machine.failPublish(shared, ticket: ticket, holdsSlot: holdsSlot, error: error)
            core.releasePublishes(1)
        }
    }

    /// A publish with a deadline (off the hot path): held with it, or dropped if it arrives
    /// here past it already.
    func publish(
        _ shared: ChannelShared, _ message: OutboundMessage, holdsSlot: Bool, before deadline: Machine.PublishDeadline,
        now: ContinuousClock.Instant
    ) {
        switch machine.routePublish(shared) {
        case .send(let channel):
            guard deadline.instant > now else {
                machine.failPublish(
                    shared, ticket: nil, holdsSlot: holdsSlot,
                    error: RabbitMQError(code: .timeout, scope: .none, message: "the publish waited past its deadline"))
                core.releasePublishes(1)
                if !machine.actions.isEmpty { executeActions() }
                return
            }
            let returnTag = machine.recordPublish(on: channel, message, ticket: nil, holdsSlot: holdsSlot)
            write(message, on: channel, returnTag: returnTag, holdsRoom: true)
        case .hold:
            machine.hold(shared, message, ticket: nil, holdsSlot: holdsSlot, deadline: deadline.instant)
        case .fail(let error):
            machine.failPublish(shared, ticket: nil, holdsSlot: holdsSlot, error: error)
            core.releasePublishes(1)
        }
    }

    /// Hands a routed publish to the connection. `holdsRoom`: it has room in the publish
    /// buffer, given back once its bytes are written.
    @inline(__always)
    func write(_ message: OutboundMessage, on channel: Machine.ChannelMachine, returnTag: UInt64?, holdsRoom: Bool) {
        guard let connection else {
            if holdsRoom { core.releasePublishes(1) }
            return
        }
        wrote = true
        do {
            switch try connection.publish(channel: channel.number, message, returnTag: returnTag, holdsRoom: holdsRoom) {
            case .sent:
                tally.published &+= 1
                tally.gaugesMayHaveMoved = true
                return
            case .tooLarge:
                // Refused at publish time already, unless frame_max shrank in a recovery.
                let error = RabbitMQError(
                    code: .invalidConfiguration, scope: .none,
                    message: "the message's properties do not fit in one frame of \(connection.negotiated.frameMax) bytes")
                logger.error("a message was not published", metadata: [LogKey.channel: "\(channel.number)", LogKey.error: "\(error)"])
                machine.publishRefused(on: channel, recorded: channel.confirmMode, error: error)
                if holdsRoom { core.releasePublishes(1) }
            }
        } catch {
            lost(error)
        }
    }

    @inline(__always)
    func send(_ method: OutboundMethod, on channel: UInt16) {
        guard let connection else { return }
        wrote = true
        do {
            try connection.send(method, channel: channel)
        } catch {
            lost(error)
        }
    }

    /// Writes what the connection buffered, as far as the socket takes it; gives back the
    /// publish buffer's room of every publish now written.
    func flush(now: ContinuousClock.Instant) {
        guard let connection else {
            wantsWrite = false
            return
        }
        var written = 0
        do {
            wantsWrite = try connection.flush(publishes: &written)
        } catch {
            core.releasePublishes(written)
            lost(error)
            return
        }
        core.releasePublishes(written)
        if written > 0 { tally.gaugesMayHaveMoved = true }
        if wrote {
            wrote = false
            machine.heartbeat.sent(now)
        }
    }

    /// The connection failed: the core decides what follows (recovery or the end).
    func lost(_ error: RabbitMQError) {
        // Nothing more goes out on it, whatever actions are still in hand.
        dropConnection()
        tally.gaugesMayHaveMoved = true
        machine.connectionLost(error, now: clock.now)
        executeActions()
    }
}

private func ioThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let box = Unmanaged<IOLoop.StartBox>.fromOpaque(argument!).takeRetainedValue()
    IOLoop.threadMain(box)
    return nil
}
