import Glibc
import Logging

/// The thread-safe half of a connection: the command inbox the I/O thread drains, the
/// wake-up descriptor, channel-number allocation, publish back-pressure and event fan-out.
///
/// Every method may be called from any thread; none blocks beyond a short critical section.
final class ConnectionCore: Sendable {
    struct State {
        var inbox: [Command] = []
        /// True while the I/O thread is awake or a wake-up is already signalled, so a burst
        /// of commands costs one eventfd write, not one per command.
        var wakePending = true
        /// Set once the connection is closing or closed: new commands fail with it.
        var terminal: RabbitMQError?
        var channelNumbers = ChannelNumberAllocator(max: 0)
        var queuedPublishes = 0
        var publishWaiters: [CheckedContinuation<Void, any Error>] = []
        /// While the connection is recovering, publishers wait here (bounded, with a deadline).
        var recovering = false
        var outageWaiters: [OutageWaiter] = []
        var nextOutageWaiter = 0
        var eventContinuations: [Int: AsyncStream<RabbitMQConnectionEvent>.Continuation] = [:]
        var nextEventSubscriber = 0
        var negotiated = Negotiated()
        /// Server-named queues re-declared under new names by recovery: old -> new.
        var renamedQueues: [String: String] = [:]
    }

    struct OutageWaiter: Sendable {
        var id: Int
        var continuation: CheckedContinuation<Void, any Error>
        var deadline: ContinuousClock.Instant
    }

    struct Negotiated: Sendable {
        var channelMax = 0
        var frameMax = 0
        var heartbeat = 0
        var serverProperties = RabbitMQFieldTable()
        var endpoint: RabbitMQConfiguration.Endpoint?
    }

    let configuration: RabbitMQConfiguration
    let logger: Logger
    let name: String
    /// Process-unique; the I/O thread is named `rmq-io-<id>` (what `top -H` and gdb show).
    let id: UInt64
    let wakeDescriptor: Int32
    var threadName: String { "rmq-io-\(id)" }
    private let state: LockedValue<State>

    init(configuration: RabbitMQConfiguration, id: UInt64, name: String, wakeDescriptor: Int32) {
        self.configuration = configuration
        self.id = id
        self.name = name
        var logger = configuration.logger
        logger[metadataKey: LogKey.connection] = "\(name)"
        self.logger = logger
        self.wakeDescriptor = wakeDescriptor
        self.state = LockedValue(State())
    }

    deinit {
        close(wakeDescriptor)
    }

    // MARK: Commands

    /// Queues a command for the I/O thread.
    func submit(_ command: Command) throws(RabbitMQError) {
        let wake: Bool = try state.withLock { state throws(RabbitMQError) in
            if let terminal = state.terminal { throw terminal }
            return Self.enqueue(command, in: &state)
        }
        if wake { signalWake() }
    }

    /// Appends to the inbox (under the lock); returns whether the I/O thread must be woken.
    @inline(__always)
    private static func enqueue(_ command: Command, in state: inout State) -> Bool {
        state.inbox.append(command)
        if state.wakePending { return false }
        state.wakePending = true
        return true
    }

    /// Queues a command the I/O thread must see even while closing (settlements are dropped
    /// there if stale). Returns false once the connection is closed.
    @discardableResult
    func submitIfRunning(_ command: Command) -> Bool {
        do {
            try submit(command)
            return true
        } catch {
            return false
        }
    }

    private func signalWake() {
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
            guard state.inbox.isEmpty else { return false }
            state.wakePending = false
            return true
        }
    }

    /// I/O thread: refuses new commands from now on and returns those still queued.
    func markTerminal(_ error: RabbitMQError) -> [Command] {
        state.withLock { state in
            if state.terminal == nil { state.terminal = error }
            let remaining = state.inbox
            state.inbox.removeAll()
            return remaining
        }
    }

    var terminalError: RabbitMQError? { state.withLock { $0.terminal } }

    // MARK: Publish back-pressure

    /// Reserves room for one publish in the inbox, suspending while the buffer is full.
    /// While the connection recovers, waits for it (at most `publishBufferLimit` publishers,
    /// each for at most `recovery.publishWaitTimeout`, or until its task is cancelled) instead
    /// of queueing more messages.
    func reservePublish() async throws {
        let limit = configuration.publishBufferLimit
        while true {
            enum Step { case reserved, waitForRoom, waitForRecovery }
            let step: Step = try state.withLock { state throws(RabbitMQError) in
                if let terminal = state.terminal { throw terminal }
                if state.recovering { return .waitForRecovery }
                guard state.queuedPublishes < limit, state.publishWaiters.isEmpty else { return .waitForRoom }
                state.queuedPublishes += 1
                return .reserved
            }
            switch step {
            case .reserved:
                return
            case .waitForRoom:
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let outcome: RabbitMQError?? = state.withLock { state in
                        if let terminal = state.terminal { return .some(terminal) }
                        if state.queuedPublishes < limit && state.publishWaiters.isEmpty {
                            state.queuedPublishes += 1
                            return .some(nil)
                        }
                        state.publishWaiters.append(continuation)
                        return nil
                    }
                    switch outcome {
                    case .some(.some(let error)): continuation.resume(throwing: error)
                    case .some(.none): continuation.resume()
                    case .none: break
                    }
                }
                return
            case .waitForRecovery:
                try await waitForRecovery(limit: limit)
            }
        }
    }

    /// Waits (without a reservation) until recovery ends, the publish wait times out, or the
    /// task is cancelled; the caller then tries again.
    private func waitForRecovery(limit: Int) async throws {
        let id = state.withLock { state in
            defer { state.nextOutageWaiter += 1 }
            return state.nextOutageWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: (any Error)?? = state.withLock { state in
                    if let terminal = state.terminal { return .some(terminal) }
                    guard state.recovering else { return .some(nil) }
                    // Checked under the lock: a cancellation handler that ran earlier found
                    // nothing to remove.
                    if Task.isCancelled { return .some(CancellationError()) }
                    guard state.outageWaiters.count < limit else {
                        return .some(
                            RabbitMQError(
                                code: .resourceError, scope: .none,
                                message: "the connection is recovering and \(limit) publishes already wait for it"))
                    }
                    state.outageWaiters.append(
                        OutageWaiter(
                            id: id, continuation: continuation,
                            deadline: .now + configuration.recovery.publishWaitTimeout))
                    return nil
                }
                switch outcome {
                case .some(.some(let error)): continuation.resume(throwing: error)
                case .some(.none): continuation.resume()
                case .none: break
                }
            }
        } onCancel: {
            let waiter: OutageWaiter? = state.withLock { state in
                guard let index = state.outageWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.outageWaiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// The publish fast path: reserves room for `command` and queues it in one critical
    /// section, when there is room and no recovery is under way. Returns false (having done
    /// nothing) otherwise; then ``reservePublish()`` and ``submit(_:)`` take the slow path.
    @inline(__always)
    func trySubmitPublish(_ command: Command) throws(RabbitMQError) -> Bool {
        let limit = configuration.publishBufferLimit
        let (queued, wake) = try state.withLock { state throws(RabbitMQError) -> (Bool, Bool) in
            if let terminal = state.terminal { throw terminal }
            guard !state.recovering, state.queuedPublishes < limit, state.publishWaiters.isEmpty else { return (false, false) }
            state.queuedPublishes += 1
            return (true, Self.enqueue(command, in: &state))
        }
        if wake { signalWake() }
        return queued
    }

    /// I/O thread: the connection was lost (true) or is back (false).
    func setRecovering(_ recovering: Bool) {
        let resumed: [OutageWaiter] = state.withLock { state in
            state.recovering = recovering
            guard !recovering else { return [] }
            let waiters = state.outageWaiters
            state.outageWaiters.removeAll()
            return waiters
        }
        for waiter in resumed { waiter.continuation.resume() }
    }

    var isRecovering: Bool { state.withLock { $0.recovering } }

    /// I/O thread, while recovering: fails publishers that waited past their deadline.
    func expireOutageWaiters(now: ContinuousClock.Instant) {
        let expired: [OutageWaiter] = state.withLock { state in
            let expired = state.outageWaiters.filter { $0.deadline <= now }
            guard !expired.isEmpty else { return [] }
            state.outageWaiters.removeAll { $0.deadline <= now }
            return expired
        }
        let timeout = configuration.recovery.publishWaitTimeout
        for waiter in expired {
            waiter.continuation.resume(
                throwing: RabbitMQError(
                    code: .timeout, scope: .none,
                    message: "the connection did not recover within \(timeout); the message was not published"))
        }
    }

    /// Returns a reservation taken by ``reservePublish()`` whose command was never submitted.
    func cancelPublishReservation() {
        releasePublishes(1)
    }

    /// I/O thread: `count` publishes left the inbox; wake as many waiting publishers.
    func releasePublishes(_ count: Int) {
        guard count > 0 else { return }
        let limit = configuration.publishBufferLimit
        let ready: [CheckedContinuation<Void, any Error>] = state.withLock { state in
            state.queuedPublishes -= count
            var ready: [CheckedContinuation<Void, any Error>] = []
            while state.queuedPublishes < limit, !state.publishWaiters.isEmpty {
                state.queuedPublishes += 1
                ready.append(state.publishWaiters.removeFirst())
            }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    /// I/O thread, at teardown: fails every waiting publisher.
    func failPublishWaiters(_ error: RabbitMQError) {
        let (waiters, outage) = state.withLock { state in
            let waiters = state.publishWaiters
            state.publishWaiters.removeAll()
            let outage = state.outageWaiters
            state.outageWaiters.removeAll()
            state.recovering = false
            return (waiters, outage)
        }
        for waiter in waiters { waiter.resume(throwing: error) }
        for waiter in outage { waiter.continuation.resume(throwing: error) }
    }

    // MARK: Channel numbers

    func allocateChannel() throws(RabbitMQError) -> UInt16 {
        try state.withLock { state throws(RabbitMQError) in
            if let terminal = state.terminal { throw terminal }
            guard let number = state.channelNumbers.allocate() else {
                throw RabbitMQError(
                    code: .resourceError,
                    message: "all \(state.channelNumbers.max) channels of this connection are in use")
            }
            return number
        }
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

    func makeEventStream() -> AsyncStream<RabbitMQConnectionEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: RabbitMQConnectionEvent.self, bufferingPolicy: .bufferingNewest(256))
        let id: Int? = state.withLock { state in
            guard state.terminal == nil else { return nil }
            let id = state.nextEventSubscriber
            state.nextEventSubscriber += 1
            state.eventContinuations[id] = continuation
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                self?.state.withLock { _ = $0.eventContinuations.removeValue(forKey: id) }
            }
        } else {
            continuation.finish()
        }
        return stream
    }

    /// Never blocks: each subscriber buffers the newest events.
    func emit(_ event: RabbitMQConnectionEvent) {
        let subscribers = state.withLock { Array($0.eventContinuations.values) }
        for subscriber in subscribers { subscriber.yield(event) }
    }

    func finishEvents() {
        let subscribers = state.withLock { state in
            let subscribers = Array(state.eventContinuations.values)
            state.eventContinuations.removeAll()
            return subscribers
        }
        for subscriber in subscribers { subscriber.finish() }
    }
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
enum LogKey {
    static let connection = "rabbitmq.connection"
    static let endpoint = "rabbitmq.endpoint"
    static let channel = "rabbitmq.channel"
    static let queue = "rabbitmq.queue"
    static let consumerTag = "rabbitmq.consumer_tag"
    static let error = "rabbitmq.error"
}
