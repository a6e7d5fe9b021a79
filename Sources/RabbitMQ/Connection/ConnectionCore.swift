import Glibc
import Logging

/// The thread-safe half of a connection: the command inbox the I/O thread drains, the
/// wake-up descriptor, channel-number allocation, the publish buffer's room, the gate
/// publishers wait at during recovery, and event fan-out. What it knows of the connection's
/// phase the I/O thread tells it (``ConnectionAction/setPhase(_:)``).
///
/// Every method may be called from any thread; none blocks beyond a short critical section.
final class ConnectionCore: Sendable {
    struct State {
        var inbox: [Command] = []
        /// Jobs of tasks that prefer the connection's executor (``RabbitMQConnectionExecutor``),
        /// run by the I/O thread between its reads and its commands.
        var jobs: [UnownedJob] = []
        /// The I/O thread has ended: jobs go to the global executor instead.
        var executorRetired = false
        /// True while the I/O thread is awake or a wake-up is already signalled, so a burst
        /// of commands costs one eventfd write, not one per command.
        var wakePending = true
        var phase = ConnectionPhase.open
        /// Set once `close()` was asked for: new commands fail with it (settlements and
        /// further closes still go through).
        var closing: RabbitMQError?
        /// Set once the connection is closed: every command fails with it.
        var terminal: RabbitMQError?
        var channelNumbers = ChannelNumberAllocator(max: 0)
        /// Room for publishes between the caller and the socket.
        var publishRoom: PermitPool
        /// Publishers waiting for the connection to come back.
        var outage = PermitPool(capacity: 0)
        var negotiated = Negotiated()
        /// Server-named queues re-declared under new names by recovery: old -> new.
        var renamedQueues: [String: String] = [:]
    }

    struct Negotiated: Sendable {
        var channelMax = 0
        var frameMax = 0
        var heartbeat = 0
        var serverProperties = RabbitMQFieldTable()
        var endpoint: RabbitMQConfiguration.Endpoint?

        /// AMQP's smallest frame_max. We propose at least 8192, so a smaller value was the
        /// broker's: rabbitmq-c before 0.16 takes any value a broker's tune proposes (0.16
        /// raises it to 4096), and the frame writer and the size checks of requests and
        /// headers rely on frames of 4096 bytes.
        static let minimumFrameMax = 4096

        /// Refuses a connection whose negotiated frame_max is below AMQP's minimum (a broker
        /// that is broken or hostile), before anything is encoded for it.
        static func checkFrameMax(_ frameMax: Int, endpoint: String) throws(RabbitMQError) {
            guard frameMax < minimumFrameMax else { return }
            throw RabbitMQError(
                code: .protocolError, scope: .connection,
                message: "\(endpoint) negotiated a frame_max of \(frameMax) bytes; AMQP's minimum is \(minimumFrameMax)")
        }

        /// Refuses a frame on a channel number above the negotiated channel_max: the broker
        /// agreed to it, and rabbitmq-c keeps a memory pool of up to frame_max bytes for every
        /// channel number it has read a frame on, until the connection closes (65,535 frames
        /// of 9 bytes, one per channel, made 0.11 hold 3 GB).
        func checkFrameChannel(_ channel: UInt16) throws(RabbitMQError) {
            guard Int(channel) > channelMax else { return }
            throw RabbitMQError(
                code: .protocolError, scope: .connection,
                message: "the broker sent a frame on channel \(channel), above the negotiated channel_max of \(channelMax)")
        }
    }

    let configuration: RabbitMQConfiguration
    let logger: Logger
    let name: String
    /// Process-unique; the I/O thread is named `rmq-io-<id>` (what `top -H` and gdb show).
    let id: UInt64
    let wakeDescriptor: Int32
    var threadName: String { "rmq-io-\(id)" }
    private let state: LockedValue<State>
    private let events = Broadcaster<RabbitMQConnectionEvent>(bufferSize: 256)

    init(configuration: RabbitMQConfiguration, id: UInt64, name: String, wakeDescriptor: Int32) {
        self.configuration = configuration
        self.id = id
        self.name = name
        var logger = configuration.logger
        logger[metadataKey: LogKey.connection] = "\(name)"
        self.logger = logger
        self.wakeDescriptor = wakeDescriptor
        self.state = LockedValue(State(publishRoom: PermitPool(capacity: configuration.publishBufferLimit)))
    }

    deinit {
        close(wakeDescriptor)
    }

    // MARK: Commands

    /// Queues a command for the I/O thread.
    func submit(_ command: Command) throws(RabbitMQError) {
        let wake: Bool = try state.withLock { state throws(RabbitMQError) in
            try Self.checkAccepts(command, state)
            return Self.enqueue(command, in: &state)
        }
        if wake { signalWake() }
    }

    @inline(__always)
    private static func checkAccepts(_ command: Command, _ state: State) throws(RabbitMQError) {
        if let terminal = state.terminal { throw terminal }
        if let closing = state.closing {
            switch command {
            case .settle, .close: break
            default: throw closing
            }
        }
    }

    /// Submits a command that carries a waiter and waits for the I/O thread to answer it
    /// with a reply; a command refused at once throws the refusal (after `refused` ran).
    func call(
        _ make: (Waiter) -> Command, refused: (RabbitMQError) -> Void = { _ in }
    ) async throws -> ChannelReply {
        var waiter: Waiter?
        defer { if let waiter { SanitizerSync.acquire(waiter) } }
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ChannelReply, any Error>) in
            let made = Waiter.reply(continuation)
            waiter = made
            submit(make(made), refused: refused) { continuation.resume(throwing: $0) }
        }
    }

    /// As ``call(_:refused:)``, for commands answered without a value.
    func callVoid(_ make: (Waiter) -> Command, refused: (RabbitMQError) -> Void = { _ in }) async throws {
        var waiter: Waiter?
        defer { if let waiter { SanitizerSync.acquire(waiter) } }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let made = Waiter.void(continuation)
            waiter = made
            submit(make(made), refused: refused) { continuation.resume(throwing: $0) }
        }
    }

    private func submit(_ command: Command, refused: (RabbitMQError) -> Void, fail: (RabbitMQError) -> Void) {
        do throws(RabbitMQError) {
            try submit(command)
        } catch {
            refused(error)
            fail(error)
        }
    }

    /// Appends to the inbox (under the lock); returns whether the I/O thread must be woken.
    @inline(__always)
    private static func enqueue(_ command: Command, in state: inout State) -> Bool {
        state.inbox.append(command)
        return claimWake(&state)
    }

    /// Something was queued for the I/O thread: true when the caller must signal the eventfd
    /// (the thread sleeps and no wake-up is signalled yet).
    @inline(__always)
    private static func claimWake(_ state: inout State) -> Bool {
        if state.wakePending { return false }
        state.wakePending = true
        return true
    }

    /// Queues a command the I/O thread should see if it still runs. Returns false once the
    /// connection no longer takes it.
    @discardableResult
    func submitIfRunning(_ command: Command) -> Bool {
        do {
            try submit(command)
            return true
        } catch {
            return false
        }
    }

    func signalWake() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(wakeDescriptor, $0.baseAddress, 8) }
    }

    /// I/O thread: moves the inbox out (O(1) when `buffer` is empty, keeping both buffers'
    /// capacity); commands still in `buffer` stay first, so order is kept.
    func takeCommands(into buffer: inout [Command]) {
        state.withLock { state in
            if buffer.isEmpty {
                swap(&state.inbox, &buffer)
            } else {
                buffer.append(contentsOf: state.inbox)
                state.inbox.removeAll(keepingCapacity: true)
            }
            state.wakePending = true
        }
    }

    /// I/O thread: returns true when it may sleep; from then on producers signal the eventfd.
    func prepareToSleep() -> Bool {
        state.withLock { state in
            guard state.inbox.isEmpty, state.jobs.isEmpty else { return false }
            state.wakePending = false
            return true
        }
    }

    // MARK: Executor

    /// Any thread: queues a job for the I/O thread, which runs it in its next turn. Once the
    /// I/O thread has ended, the job goes to the global executor (returns false).
    func enqueueJob(_ job: UnownedJob) -> Bool {
        let (accepted, wake): (Bool, Bool) = state.withLock { state in
            guard !state.executorRetired else { return (false, false) }
            state.jobs.append(job)
            return (true, Self.claimWake(&state))
        }
        if wake { signalWake() }
        return accepted
    }

    /// I/O thread: moves the queued jobs out (O(1), keeping both buffers' capacity).
    func takeJobs(into buffer: inout [UnownedJob]) {
        state.withLock { state in
            guard !state.jobs.isEmpty else { return }
            swap(&state.jobs, &buffer)
            state.wakePending = true
        }
    }

    /// I/O thread, as it ends: no more jobs run here; returns those still queued.
    func retireExecutor() -> [UnownedJob] {
        state.withLock { state in
            state.executorRetired = true
            defer { state.jobs = [] }
            return state.jobs
        }
    }

    /// I/O thread: it woke up from `poll()`. Until it prepares to sleep again, producers
    /// queue commands without signalling the eventfd: it looks at the inbox before sleeping.
    func markAwake() {
        state.withLock { $0.wakePending = true }
    }

    // MARK: Phase

    /// I/O thread: the connection's phase changed (see ``ConnectionPhase``).
    func setPhase(_ phase: ConnectionPhase) {
        let resumed: [PermitPool.Continuation] = state.withLock { state in
            state.phase = phase
            if phase == .closing, state.closing == nil {
                state.closing = RabbitMQError(code: .closed, scope: .connection, message: "the connection is closing")
            }
            // The gate opens: waiting publishers try again (and fail if it is closing).
            return phase == .recovering ? [] : state.outage.releaseAll()
        }
        for waiter in resumed { waiter.resume() }
    }

    /// I/O thread: the connection is over. Refuses every command from now on, fails every
    /// waiting publisher, ends the event streams, and returns the commands still queued.
    func terminate(_ error: RabbitMQError) -> [Command] {
        let (remaining, waiters): ([Command], [PermitPool.Continuation]) = state.withLock { state in
            if state.terminal == nil { state.terminal = error }
            let remaining = state.inbox
            state.inbox.removeAll()
            return (remaining, state.publishRoom.releaseAll() + state.outage.releaseAll())
        }
        for waiter in waiters { waiter.resume(throwing: error) }
        return remaining
    }

    var terminalError: RabbitMQError? { state.withLock { $0.terminal } }

    /// Neither closing nor closed.
    var isOpen: Bool { state.withLock { $0.terminal == nil && $0.closing == nil } }

    var isRecovering: Bool { state.withLock { $0.phase == .recovering && $0.terminal == nil } }

    // MARK: Publish room

    /// The publish fast path: takes room for `command` and queues it in one critical section,
    /// when there is room and no recovery is under way. Returns false (having done nothing)
    /// otherwise; then ``reservePublish(deadline:)`` and ``submit(_:)`` take the slow path.
    @inline(__always)
    func trySubmitPublish(_ command: Command) throws(RabbitMQError) -> Bool {
        let (queued, wake) = try state.withLock { state throws(RabbitMQError) -> (Bool, Bool) in
            try Self.checkAccepts(command, state)
            guard state.phase != .recovering, state.publishRoom.tryAcquire() else { return (false, false) }
            return (true, Self.enqueue(command, in: &state))
        }
        if wake { signalWake() }
        return queued
    }

    /// Takes room for one publish in the buffer, suspending while it is full. While the
    /// connection recovers, waits for it first (at most `publishBufferLimit` publishers, each
    /// until `recovery.publishWaitTimeout` or `deadline`, whichever comes first). Ends at once
    /// with `CancellationError` when the task is cancelled.
    func reservePublish(deadline: ContinuousClock.Instant? = nil) async throws {
        while true {
            enum Step { case reserved, waitForRoom, waitForRecovery }
            let step: Step = try state.withLock { state throws(RabbitMQError) in
                if let terminal = state.terminal { throw terminal }
                if let closing = state.closing { throw closing }
                if state.phase == .recovering { return .waitForRecovery }
                return state.publishRoom.tryAcquire() ? .reserved : .waitForRoom
            }
            switch step {
            case .reserved:
                return
            case .waitForRoom:
                try await wait(for: .room, deadline: deadline)
                return
            case .waitForRecovery:
                let outageDeadline = ContinuousClock.now + configuration.recovery.publishWaitTimeout
                try await wait(for: .outage, deadline: min(deadline ?? outageDeadline, outageDeadline))
            }
        }
    }

    /// Publishes waiting for the connection to come back (tests look).
    var publishesWaitingForRecovery: Int { state.withLock { $0.outage.waiterCount } }

    /// The two pools publishers wait on.
    private enum Pool: Sendable {
        case room, outage

        func access<R>(_ state: inout State, _ body: (inout PermitPool) -> R) -> R {
            switch self {
            case .room: body(&state.publishRoom)
            case .outage: body(&state.outage)
            }
        }
    }

    private func wait(for pool: Pool, deadline: ContinuousClock.Instant?) async throws {
        let id = state.withLock { pool.access(&$0) { $0.makeID() } }
        let recovering = pool == .outage
        let limit = configuration.publishBufferLimit
        try await PermitPool.wait(
            register: { continuation in
                state.withLock { state -> Result<PermitPool.Registration, any Error> in
                    if let terminal = state.terminal { return .failure(terminal) }
                    if let closing = state.closing { return .failure(closing) }
                    // Checked under the lock: a cancellation handler that ran earlier found
                    // nothing to remove.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if recovering {
                        // The connection came back meanwhile: try again for room.
                        guard state.phase == .recovering else { return .success(.granted) }
                        guard state.outage.waiterCount < limit else {
                            return .failure(
                                RabbitMQError(
                                    code: .resourceError, scope: .none,
                                    message: "the connection is recovering and \(limit) publishes already wait for it"))
                        }
                    }
                    return .success(pool.access(&state) { $0.register(id: id, continuation: continuation, deadline: deadline) })
                }.map { registration in
                    // The I/O thread may sleep past this deadline: wake it to look again.
                    if registration == .queued, deadline != nil { signalWake() }
                    return registration
                }
            },
            cancel: { [state] in state.withLock { pool.access(&$0) { $0.removeWaiter(id) } } })
    }

    /// I/O thread: fails publishers that waited past their deadline.
    func expireWaiters(now: ContinuousClock.Instant) {
        let (room, outage) = state.withLock { state -> ([PermitPool.Continuation], [PermitPool.Continuation]) in
            guard state.publishRoom.waiterCount + state.outage.waiterCount > 0 else { return ([], []) }
            return (state.publishRoom.expire(now: now), state.outage.expire(now: now))
        }
        for waiter in room {
            waiter.resume(
                throwing: RabbitMQError(code: .timeout, scope: .none, message: "no room in the publish buffer before the deadline"))
        }
        let timeout = configuration.recovery.publishWaitTimeout
        for waiter in outage {
            waiter.resume(
                throwing: RabbitMQError(
                    code: .timeout, scope: .none,
                    message: "the connection did not recover in time (at most \(timeout)); the message was not published"))
        }
    }

    /// The earliest deadline of a waiting publisher (the I/O thread's timer).
    var earliestWaiterDeadline: ContinuousClock.Instant? {
        state.withLock { state in
            // Asked before every sleep: no arrays.
            guard state.publishRoom.waiterCount + state.outage.waiterCount > 0 else { return nil }
            return earlier(state.publishRoom.earliestDeadline, state.outage.earliestDeadline)
        }
    }

    /// Publishes queued for the I/O thread and not yet written (the publish buffer's depth).
    var publishesBuffered: Int {
        state.withLock { $0.publishRoom.used }
    }

    /// Gives back room taken by ``reservePublish(deadline:)`` or the fast path: the publish
    /// was written, failed, or never submitted.
    func releasePublishes(_ count: Int) {
        guard count > 0 else { return }
        let ready = state.withLock { $0.publishRoom.release(count) }
        for waiter in ready { waiter.resume() }
    }

    // MARK: Channel numbers

    func allocateChannel() throws(RabbitMQError) -> UInt16 {
        try state.withLock { state throws(RabbitMQError) in
            if let terminal = state.terminal { throw terminal }
            if let closing = state.closing { throw closing }
            guard let number = state.channelNumbers.allocate() else {
                throw RabbitMQError(
                    code: .resourceError,
                    message: "all \(state.channelNumbers.max) channels of this connection are in use")
            }
            return number
        }
    }

    /// For the I/O thread (recovery's own channel): nil when none is free.
    func allocateChannelNumber() -> UInt16? {
        state.withLock { $0.channelNumbers.allocate() }
    }

    func releaseChannel(_ number: UInt16) {
        state.withLock { $0.channelNumbers.release(number) }
    }

    // MARK: Negotiated values

    func setNegotiated(_ negotiated: Negotiated) {
        state.withLock { state in
            state.negotiated = negotiated
            // Channels keep their numbers across recovery: size the allocator only once.
            guard state.channelNumbers.max == 0 else { return }
            state.channelNumbers = ChannelNumberAllocator(
                max: min(configuration.channelMax, negotiated.channelMax == 0 ? 65535 : negotiated.channelMax))
        }
    }

    var negotiated: Negotiated { state.withLock { $0.negotiated } }

    func recordRename(from old: String, to new: String) {
        state.withLock { state in
            state.renamedQueues[old] = new
            // Keep chains short: names that pointed at `old` now point at `new`.
            for (key, value) in state.renamedQueues where value == old { state.renamedQueues[key] = new }
        }
    }

    func currentName(ofQueue name: String) -> String {
        state.withLock { $0.renamedQueues[name] ?? name }
    }

    // MARK: Events

    func makeEventStream() -> AsyncStream<RabbitMQConnectionEvent> { events.subscribe() }

    /// Never blocks: each subscriber buffers the newest events.
    func emit(_ event: RabbitMQConnectionEvent) { events.yield(event) }

    func finishEvents() { events.finish() }
}

/// Hands out the lowest free channel number: each number rabbitmq-c has seen keeps a pool of
/// about frame_max bytes until the connection is destroyed, so low numbers are reused.
struct ChannelNumberAllocator: Sendable {
    private(set) var max: Int
    private var used: [Bool]

    init(max: Int) {
        self.max = max
        self.used = Array(repeating: false, count: max + 1)
    }

    mutating func allocate() -> UInt16? {
        guard max > 0 else { return nil }
        for number in 1...max where !used[number] {
            used[number] = true
            return UInt16(number)
        }
        return nil
    }

    mutating func release(_ number: UInt16) {
        if Int(number) <= max { used[Int(number)] = false }
    }

    func isUsed(_ number: UInt16) -> Bool { Int(number) <= max && used[Int(number)] }
}

/// Structured logging metadata keys, kept in one place.
package enum LogKey {
    package static let connection = "rabbitmq.connection"
    package static let endpoint = "rabbitmq.endpoint"
    package static let channel = "rabbitmq.channel"
    package static let queue = "rabbitmq.queue"
    package static let consumerTag = "rabbitmq.consumer_tag"
    package static let error = "rabbitmq.error"
    /// The patterns': where a subscription's undecodable deliveries go.
    package static let deadLetterQueue = "rabbitmq.dead_letter_queue"
}
