/// Recovery as a plan of steps the I/O loop drives, one event at a time: wait out the
/// back-off, connect, then restore (channels with their prefetch and confirm mode, exchanges,
/// queues, bindings, consumers, in the Java client's order), publish the unconfirmed
/// messages again, and report `recovered`. Nothing here waits: each step either sends one
/// request and waits for its reply as an event, or pauses until a deadline the loop's timer
/// reports.
struct RecoveryPlan: Sendable {
    enum Step: Sendable {
        /// Waiting before attempt `attempt + 1`.
        case backingOff(until: ContinuousClock.Instant)
        /// A connect attempt is under way (the loop reports its result).
        case connecting
        /// Connected: restoring what the application had.
        case restoring(Restore)
    }

    var step: Step
    /// Connect attempts made so far.
    var attempt = 0
    var backoff: Backoff
    /// Why the last attempt failed (or why the connection was lost).
    var lastError: RabbitMQError
    /// The new connection was blocked by the broker while restoring.
    var blocked: BlockedState?
}

/// Since when, and why, the broker has stopped reading from the connection.
struct BlockedState: Sendable, Equatable {
    var since: ContinuousClock.Instant
    var reason: String
}

/// The restore phase: a list of operations run in order, one in flight at a time.
struct Restore: Sendable {
    enum Operation: Sendable, Equatable {
        /// Open an application channel again.
        case reopen(UInt16)
        case qos(UInt16, prefetchCount: UInt16, global: Bool)
        case confirmSelect(UInt16)
        /// Open the channel the plan declares topology and probes queues on.
        case openInternal
        case exchange(TopologyRegistry.Exchange)
        /// `lockedUntil`: an exclusive queue refused with 405 is retried until then.
        case queue(TopologyRegistry.Queue, lockedUntil: ContinuousClock.Instant?)
        case binding(TopologyRegistry.Binding)
        /// Wait (bounded) until a consumer's queue exists: another connection may own it.
        case waitForQueue(String, until: ContinuousClock.Instant?)
        case consume(UInt16, consumerTag: String)
        case closeInternal
        case republish
    }

    var operations: [Operation]
    var next = 0
    /// The operation whose reply is awaited.
    var inFlight: Operation?
    /// Nothing runs before this instant (a retry's pause).
    var pausedUntil: ContinuousClock.Instant?
    /// The plan's own channel, while open.
    var internalChannel: UInt16?
    /// The endpoint the new connection reached.
    var endpoint: String

    /// Puts `inserted` next in line, in this order, before what was left.
    mutating func insertNext(_ inserted: [Operation]) {
        operations.insert(contentsOf: inserted, at: next)
    }

    /// A server-named queue came back under a new name: what is left to do follows it.
    mutating func renameQueue(from old: String, to new: String) {
        for index in next..<operations.count {
            switch operations[index] {
            case .binding(var binding) where binding.destinationKind == .queue && binding.destination == old:
                binding.destination = new
                operations[index] = .binding(binding)
            case .waitForQueue(old, let until):
                operations[index] = .waitForQueue(new, until: until)
            case .queue(var queue, let lockedUntil) where queue.name == old:
                queue.name = new
                operations[index] = .queue(queue, lockedUntil: lockedUntil)
            default:
                break
            }
        }
    }

    mutating func takeNext() -> Operation? {
        guard next < operations.count else { return nil }
        defer { next += 1 }
        return operations[next]
    }

    /// How long a queue locked by the dead connection, or owned by another connection that
    /// is still recovering, is waited for: until the broker notices the old connection died.
    static func lockWait(heartbeat: Duration) -> Duration { max(heartbeat * 2, .seconds(10)) }
    static let lockedRetryPause = Duration.seconds(1)
    static let missingQueuePause = Duration.milliseconds(250)
}

extension RecoveryPlan {
    /// Losses worth reconnecting for. A refused login means the credentials or the virtual
    /// host changed: retrying would only hammer the broker.
    static func isRecoverable(_ error: RabbitMQError) -> Bool {
        !isLoginRefusal(error) && error.code != .closed
    }

    static func isLoginRefusal(_ error: RabbitMQError) -> Bool {
        error.code == .authenticationFailed || error.code == .accessRefused || error.code == .notAllowed
    }
}
