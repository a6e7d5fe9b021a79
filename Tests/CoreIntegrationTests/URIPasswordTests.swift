import Foundation
import Logging
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// Issue 13: a password holding `/ ? # , : @ %` in a URI, raw or percent-encoded, logs in,
/// and neither the library's logs nor its errors show any part of it, whatever fails.
@Suite("URI passwords", .timeLimit(.minutes(5)))
struct URIPasswordTests {
    static let fragments = ["Kx7q", "Zr9w", "Mn3b", "Lp5t", "Hd8j", "Gs2v", "Qf6c", "Yt4e"]
    static let password = "Kx7q/Zr9w?Mn3b#Lp5t,Hd8j:Gs2v@Qf6c%Yt4e"
    static let raw = "Kx7q/Zr9w?Mn3b#Lp5t,Hd8j:Gs2v@Qf6c%25Yt4e"
    static let encoded = "Kx7q%2FZr9w%3FMn3b%23Lp5t%2CHd8j%3AGs2v%40Qf6c%25Yt4e"

    static func expectNoSecret(_ texts: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        for text in texts {
            for fragment in fragments {
                #expect(!text.contains(fragment), "\(fragment) in: \(text)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test func reservedCharactersInAPasswordLogInAndNeverShow() async throws {
        let user = TestBroker.uniqueName("uri-secret-user")
        try await TestBroker.ctl("add_user", user, Self.password)
        let records = LogRecords()
        var errors: [String] = []
        do {
            try await TestBroker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
            func configuration(_ secret: String, port: Int? = nil) throws -> RabbitMQConfiguration {
                var configuration = try RabbitMQConfiguration(
                    uri: "amqp://\(user):\(secret)@127.0.0.1:\(try port ?? TestBroker.port)/")
                configuration.logger = Logger(label: "uri-password-test") { _ in RecordingLogHandler(records) }
                configuration.connectionName = TestBroker.uniqueName("uri-secret")
                return configuration
            }
            for secret in [Self.raw, Self.encoded] {
                let connection = try await RabbitMQConnection.connect(configuration: configuration(secret))
                let channel = try await connection.openChannel()
                let queue = try await channel.queueDeclare(TestBroker.uniqueName("uri-secret"), exclusive: true).name
                try await channel.publish("hello", routingKey: queue)
                try await channel.close()
                try await connection.close()
            }
            for failing in [
                try configuration(Self.raw.replacingOccurrences(of: "Yt4e", with: "Yt4x")), try configuration(Self.raw, port: 1),
            ] {
                do {
                    let connection = try await RabbitMQConnection.connect(configuration: failing)
                    Issue.record("connected: \(connection)")
                } catch {
                    errors += ["\(error)", String(reflecting: error), error.localizedDescription]
                }
            }
            do {
                _ = try RabbitMQConfiguration(uri: "amqp://\(user):\(Self.raw)@127.0.0.1:http/")
                Issue.record("a port that is not a number parsed")
            } catch {
                errors += ["\(error)", error.message]
            }
        } catch {
            Issue.record(error)
        }
        try await TestBroker.ctl("delete_user", user)
        #expect(!records.all.isEmpty)
        // The endpoint in the logs is scheme://host:port, never with user information.
        #expect(records.all.contains { $0.contains("rabbitmq.endpoint") })
        #expect(!records.all.contains { $0.contains("@127.0.0.1") }, "\(records.all)")
        #expect(errors.count == 8)
        Self.expectNoSecret(records.all + errors)
    }
}
