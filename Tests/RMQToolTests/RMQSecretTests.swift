import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Testing

/// Issue 13: `rmq` connects with a password holding `/ ? # , : @ %`, through `--uri` and
/// `RABBITMQ_URL`, raw and percent-encoded, and no output of it ever shows any part of the
/// password, whatever fails.
@Suite("rmq secrets", .timeLimit(.minutes(5)))
struct RMQSecretTests {
    /// The fragments between the special characters: no output may contain any of them.
    static let fragments = ["Kx7q", "Zr9w", "Mn3b", "Lp5t", "Hd8j", "Gs2v", "Qf6c", "Yt4e"]
    static let password = "Kx7q/Zr9w?Mn3b#Lp5t,Hd8j:Gs2v@Qf6c%Yt4e"

    /// The password raw in a URI: only `%`, the escape character, escaped.
    static let raw = "Kx7q/Zr9w?Mn3b#Lp5t,Hd8j:Gs2v@Qf6c%25Yt4e"
    /// Every reserved character percent-encoded.
    static let encoded = "Kx7q%2FZr9w%3FMn3b%23Lp5t%2CHd8j%3AGs2v%40Qf6c%25Yt4e"

    static func uri(user: String, password: String, port: String? = nil) throws -> String {
        "amqp://\(user):\(password)@127.0.0.1:\(try port ?? String(TestBroker.port))/"
    }

    static func expectNoSecret(_ result: RMQTool.Result, sourceLocation: SourceLocation = #_sourceLocation) {
        for fragment in fragments {
            #expect(!result.output.contains(fragment), "\(fragment) in \(result)", sourceLocation: sourceLocation)
            #expect(!result.errorOutput.contains(fragment), "\(fragment) in \(result)", sourceLocation: sourceLocation)
        }
    }

    /// A failure is one line on standard error starting with "rmq:", with `text` in it.
    static func expectOneLineError(_ result: RMQTool.Result, containing text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status != 0, "\(result)", sourceLocation: sourceLocation)
        #expect(result.errorOutput.hasPrefix("rmq: "), "\(result)", sourceLocation: sourceLocation)
        #expect(result.errorOutput.split(separator: "\n").count == 1, "\(result)", sourceLocation: sourceLocation)
        #expect(result.errorOutput.contains(text), "\(result)", sourceLocation: sourceLocation)
        expectNoSecret(result, sourceLocation: sourceLocation)
    }

    @Test func aPasswordWithEveryReservedCharacterWorksAndNeverShows() async throws {
        let user = TestBroker.uniqueName("secret-user")
        try await TestBroker.ctl("add_user", user, Self.password)
        let connection = try await TestBroker.connect()
        let channel = try await connection.openChannel()
        let queue = try await channel.queueDeclare(TestBroker.uniqueName("cli-secret"), durable: true).name
        do {
            try await TestBroker.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
            let publish = ["publish", "--exchange", "", "--routing-key", queue, "--confirm"]

            // Raw and percent-encoded, through --uri and through RABBITMQ_URL (a list whose
            // first URI has a comma in its password).
            var sent: [String] = []
            for (index, form) in [Self.raw, Self.encoded].enumerated() {
                let good = try Self.uri(user: user, password: form)
                let viaOption = try await RMQTool.run(publish + ["--uri", good, "option-\(index)"])
                #expect(viaOption.status == 0, "\(viaOption)")
                Self.expectNoSecret(viaOption)
                let viaEnvironment = try await RMQTool.run(
                    publish + ["environment-\(index)"], environment: ["RABBITMQ_URL": "\(good),amqp://127.0.0.1:1/"])
                #expect(viaEnvironment.status == 0, "\(viaEnvironment)")
                Self.expectNoSecret(viaEnvironment)
                sent += ["option-\(index)", "environment-\(index)"]
            }
            var received: [String] = []
            while let delivery = try await channel.get(queue: queue, autoAck: true) { received.append(delivery.bodyString) }
            #expect(received == sent)

            // What fails: a wrong password, a closed port, a port that is not one, a bad
            // query, each through both ways in.
            let wrong = try Self.uri(user: user, password: Self.raw.replacingOccurrences(of: "Yt4e", with: "Yt4x"))
            let closed = try Self.uri(user: user, password: Self.raw, port: "1")
            let notAPort = try Self.uri(user: user, password: Self.raw, port: "http")
            let masked = "amqp://\(user):***@127.0.0.1:http/"
            let cases: [(String, String)] = [
                (wrong, "authentication failed"), (closed, "127.0.0.1:1"), (notAPort, masked),
                (try Self.uri(user: user, password: Self.raw) + "?heartbeat=x", "heartbeat=x"),
                // A list cut inside the password (the comma) leaves no '@' in its first URI.
                ("amqp://\(user):Kx7q", "amqp://\(user):***"),
            ]
            for (uri, text) in cases {
                Self.expectOneLineError(try await RMQTool.run(publish + ["--uri", uri, "x"]), containing: text)
                Self.expectOneLineError(try await RMQTool.run(publish + ["x"], environment: ["RABBITMQ_URL": uri]), containing: text)
            }
        } catch {
            Issue.record(error)
        }
        try await channel.queueDelete(queue)
        try await connection.close()
        try await TestBroker.ctl("delete_user", user)
    }
}
