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
    var useTLS: Bool
    var caCertificatePath: String?

    init(uri: String) throws {
        var configuration = try RabbitMQConfiguration(uri: uri)
        // Connection and channel events would otherwise be printed between the results.
        configuration.logger = Logger(label: "rabbitmq-bench", factory: { _ in SwiftLogNoOpLogHandler() })
        guard let endpoint = configuration.endpoints.first else { throw BenchError("\(RabbitMQConfiguration.redactedURI(uri)) names no broker") }
        useTLS = endpoint.useTLS
        caCertificatePath = configuration.tls.caCertificatePath
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
                        (caCertificatePath ?? "").withCString { ca in
                            var endpoint = crmq_bench_endpoint(
                                host: host, port: Int32(port), vhost: vhost, user: user, password: password,
                                channel_max: Int32(configuration.channelMax), frame_max: Int32(configuration.frameMax),
                                heartbeat: Int32(configuration.heartbeat.components.seconds), tls: useTLS ? 1 : 0,
                                cacert: caCertificatePath == nil ? nil : ca)
                            return body(&endpoint)
                        }
                    }
                }
            }
        }
    }
}
