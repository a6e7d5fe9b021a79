import Foundation
import RabbitMQTestSupport
import Testing

@testable import RabbitMQ

/// `updateSecret` with the broker's internal user database: the password changes on the
/// broker (`rabbitmqctl change_password`), the connection is told the new one, and the next
/// login (recovery's) uses it.
@Suite("Secret updates", .timeLimit(.minutes(3)))
struct SecretUpdateTests {
    /// A user of its own (the test changes its password), allowed everything on `/`.
    private func makeUser(password: String) async throws -> String {
        let user = TestBroker.uniqueName("secret-user")
        try await TestBroker.ctl("add_user", user, password)
        try await TestBroker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        return user
    }

    private func connect(_ user: String, _ password: String, name: String) async throws -> RabbitMQConnection {
        var configuration = try TestBroker.configuration(name: name)
        configuration.username = user
        configuration.password = password
        return try await RabbitMQConnection.connect(configuration: configuration)
    }

    /// Needs only the broker's URL (scripts/test-rabbitmq-c-015.sh runs it with rabbitmq-c
    /// 0.15, which reads update-secret-ok): the broker's answer is read and the connection
    /// goes on.
    @Test func theBrokerTakesTheSecretOnTheOpenConnection() async throws {
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)
        let password = try TestBroker.configuration().password
        for round in 1...3 {
            let update = try await connection.updateSecret(password, reason: "refresh \(round)")
            #expect(update == (CConnection.libraryReadsUpdateSecretOk ? .applied : .nextLogin))
            try await channel.publish("round \(round)", routingKey: queue.name)
            #expect(try await channel.get(queue: queue.name, autoAck: true)?.bodyString == "round \(round)")
        }
        try await connection.close()
    }

    @Test func recoveryLogsInWithTheUpdatedSecretAndWithoutItGivesUp() async throws {
        let oldSecret = "old-\(UUID())"
        let newSecret = "new-\(UUID())"
        let user = try await makeUser(password: oldSecret)
        let updatedName = TestBroker.uniqueName("secret-updated")
        let staleName = TestBroker.uniqueName("secret-stale")
        let updated = try await connect(user, oldSecret, name: updatedName)
        let stale = try await connect(user, oldSecret, name: staleName)
        let updatedEvents = ConnectionEventLog(updated)
        let staleEvents = ConnectionEventLog(stale)
        let channel = try await updated.openChannel()
        let queue = try await channel.queueDeclare("", exclusive: true)

        try await TestBroker.ctl("change_password", user, newSecret)
        let update = try await updated.updateSecret(newSecret, reason: "token refresh")
        // rabbitmq-c 0.11 cannot read the broker's answer: the secret waits for the next login.
        #expect(update == (CConnection.libraryReadsUpdateSecretOk ? .applied : .nextLogin))
        try await channel.publish("still open", routingKey: queue.name)
        #expect(try await channel.get(queue: queue.name, autoAck: true)?.bodyString == "still open")

        try await TestBroker.closeConnection(named: updatedName, reason: "secret test")
        try await TestBroker.closeConnection(named: staleName, reason: "secret test")
        try await updatedEvents.recovered()
        let renamed = updatedEvents.all.contains { if case .queueRenamed = $0 { true } else { false } }
        #expect(renamed, "the server-named queue came back under a new name")
        // The control: the connection that was not told gives up on the login refusal.
        let failed = try await staleEvents.next("the stale connection to give up") {
            if case .recoveryFailed = $0 { true } else { false }
        }
        if case .recoveryFailed(let error) = failed.event { #expect(error.code == .authenticationFailed) }
        #expect(try await updated.openChannel().queueDeclare("", exclusive: true).name.hasPrefix("amq.gen-"))

        // Refused before anything is sent.
        for (secret, reason) in [("nul\u{0}byte", "r"), ("s", String(repeating: "r", count: 256))] {
            let error = await #expect(throws: RabbitMQError.self) { try await updated.updateSecret(secret, reason: reason) }
            #expect(error?.code == .invalidConfiguration)
        }
        try await updated.close()
        let closed = await #expect(throws: RabbitMQError.self) { try await updated.updateSecret(newSecret, reason: "late") }
        #expect(closed != nil)
        try? await stale.close()
        try await TestBroker.ctl("delete_user", user)
    }
}
