import RabbitMQTestSupport
import Synchronization

/// Stands in for a mail service: fails the first attempt, then records what it sent.
final class Mailer: Sendable {
    private let attempts = Atomic<Int>(0)
    let sent = Recorded<String>()

    func send(_ email: Email) async throws {
        if attempts.add(1, ordering: .relaxed).newValue == 1 { throw TestSupportError("SMTP timeout") }
        sent.append(email.to)
    }
}
