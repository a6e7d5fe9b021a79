import CRabbitMQBaseline
import Logging
import RabbitMQ

/// The broker both implementations talk to, from `RABBITMQ_URL`, with the same connection
/// settings on both sides (heartbeat, frame_max, channel_max as in RabbitMQConfiguration).
struct BenchEndpoint: Sendable {
    var configuration: RabbitMQConfiguration
    var host: String
    var port: Int
    var virtualHost: String
    var username: String
    var password: String

    init(uri: String) throws {
        var configuration = try RabbitMQConfiguration(uri: uri)
        // Connection and channel events would otherwise be printed between the results.
        configuration.logger = Logger(label: "rabbitmq-bench", factory: { _ in SwiftLogNoOpLogHandler() })
        guard let endpoint = configuration.endpoints.first, !endpoint.useTLS else {
            throw BenchError("RABBITMQ_URL must be a plain amqp:// URL (the C baseline speaks TCP only)")
        }
        self.configuration = configuration
        self.host = endpoint.host
        self.port = endpoint.port
        self.virtualHost = configuration.virtualHost
        self.username = configuration.username
        self.password = configuration.password
    }

    /// Calls `body` with the C form of the endpoint; its strings live until `body` returns.
    func withC<Result>(_ body: (UnsafePointer<crmq_bench_endpoint>) -> Result) -> Result {
        host.withCString { host in
            virtualHost.withCString { vhost in
                username.withCString { user in
                    password.withCString { password in
                        var endpoint = crmq_bench_endpoint(
                            host: host, port: Int32(port), vhost: vhost, user: user, password: password,
                            channel_max: Int32(configuration.channelMax), frame_max: Int32(configuration.frameMax),
                            heartbeat: Int32(configuration.heartbeat.components.seconds))
                        return body(&endpoint)
                    }
                }
            }
        }
    }
}
