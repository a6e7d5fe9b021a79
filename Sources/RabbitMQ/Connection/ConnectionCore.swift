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
        var nextChannelGeneration: UInt64 = 0
        var queuedPublishes = 0
        var publishWaiters: [CheckedContinuation<Void, any Error>] = []
        var eventContinuations: [Int: AsyncStream<RabbitMQConnectionEvent>.Continuation] = [:]
        var nextEventSubscriber = 0
        var negotiated = Negotiated()
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
            state.inbox.append(command)
            if state.wakePending { return false }
            state.wakePending = true
            return true
        }
        if wake { signalWake() }
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

    /// I/O thread: swaps the inbox out (O(1), keeps both buffers' capacity).
    func takeCommands(into buffer: inout [Command]) {
        state.withLock { state in
            swap(&state.inbox, &buffer)
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
    func reservePublish() async throws {
        let limit = configuration.publishBufferLimit
        let reserved: Bool = try state.withLock { state throws(RabbitMQError) in
            if let terminal = state.terminal { throw terminal }
            guard state.queuedPublishes < limit, state.publishWaiters.isEmpty else { return false }
            state.queuedPublishes += 1
            return true
        }
        if reserved { return }
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
        let waiters = state.withLock { state in
            let waiters = state.publishWaiters
            state.publishWaiters.removeAll()
            return waiters
        }
        for waiter in waiters { waiter.resume(throwing: error) }
    }

    // MARK: Channel numbers

    func allocateChannel() throws(RabbitMQError) -> (number: UInt16, generation: UInt64) {
        try state.withLock { state throws(RabbitMQError) in
            if let terminal = state.terminal { throw terminal }
            guard let number = state.channelNumbers.allocate() else {
                throw RabbitMQError(
                    code: .resourceError,
                    message: "all \(state.channelNumbers.max) channels of this connection are in use")
            }
            state.nextChannelGeneration += 1
            return (number, state.nextChannelGeneration)
        }
    }

    func releaseChannel(_ number: UInt16) {
        state.withLock { $0.channelNumbers.release(number) }
    }

    // MARK: Negotiated values

    func setNegotiated(_ negotiated: Negotiated) {
        state.withLock { state in
            state.negotiated = negotiated
            state.channelNumbers = ChannelNumberAllocator(
                max: min(configuration.channelMax, negotiated.channelMax == 0 ? 65535 : negotiated.channelMax))
        }
    }

    var negotiated: Negotiated { state.withLock { $0.negotiated } }

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
