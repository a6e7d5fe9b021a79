import RabbitMQ
import Synchronization

/// A counter shared by the tasks of a test.
public final class Counter: Sendable {
    private let value = Atomic<Int>(0)

    public init() {}

    /// Adds `amount`; returns the new value.
    @discardableResult
    public func add(_ amount: Int = 1) -> Int { value.add(amount, ordering: .relaxed).newValue }

    /// The value now.
    public var current: Int { value.load(ordering: .relaxed) }
}

/// Lines the tasks of a test note down, for a failure message. Behind a pthread mutex
/// (`LockedValue`), not `Synchronization.Mutex`, whose futex ThreadSanitizer cannot see: it
/// reported the notes of concurrent tasks as a race.
public final class Notes: Sendable {
    private let lines = LockedValue<[String]>([])

    public init() {}

    public func add(_ line: String) { lines.withLock { $0.append(line) } }

    /// Everything noted so far, in order.
    public var all: [String] { lines.withLock { $0 } }
}
