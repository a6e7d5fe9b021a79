import RabbitMQ

/// The queues and exchanges the demo declared, recorded as it goes, so that they can be
/// deleted whether the demo succeeds or fails halfway.
final class DemoTopology: Sendable {
    private let names = LockedValue<(queues: [String], exchanges: [String])>(([], []))

    func record(queues: [String] = [], exchanges: [String] = []) {
        names.withLock { names in
            names.queues += queues.filter { !names.queues.contains($0) }
            names.exchanges += exchanges.filter { !names.exchanges.contains($0) }
        }
    }

    var queues: [String] { names.withLock { $0.queues } }
    var exchanges: [String] { names.withLock { $0.exchanges } }
}
