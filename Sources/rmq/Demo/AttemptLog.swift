import RabbitMQ

/// Which attempts the demo's retry handler saw, per payment id; shared between the handler
/// and the report.
final class AttemptLog: Sendable {
    private let attempts = LockedValue<[String: [Int]]>([:])

    func record(_ id: String, attempt: Int) {
        attempts.withLock { $0[id, default: []].append(attempt) }
    }

    var snapshot: [String: [Int]] { attempts.withLock { $0 } }
}
