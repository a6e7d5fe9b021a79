import ArgumentParser
import Foundation
import RabbitMQ

/// Where the broker is: `--uri` (repeatable: cluster nodes, tried in order), else
/// `RABBITMQ_URL` (comma-separated), else the local default.
///
/// `RABBITMQ_URL` splits only at a comma that starts another `amqp://` or `amqps://` URI
/// (``RabbitMQConfiguration/splitURIList(_:)``), so a comma in a password stays in it;
/// `%2C` always works too. No message of `rmq` shows a password: the library's URI errors
/// mask it.
struct ConnectionOptions: ParsableArguments {
    static let defaultURI = "amqp://guest:guest@127.0.0.1:5672/"

    @Option(
        name: .customLong("uri"),
        help: ArgumentHelp(
            "A broker URI; repeat it for the nodes of a cluster, tried in order.",
            discussion: """
                Default: $RABBITMQ_URL (URIs separated by commas; a comma in a password needs no \
                escaping, %2C always works), else \(defaultURI)
                """,
            valueName: "uri"))
    var uris: [String] = []

    /// The URIs in effect.
    var effectiveURIs: [String] {
        if !uris.isEmpty { return uris }
        if let environment = ProcessInfo.processInfo.environment["RABBITMQ_URL"] {
            let list = RabbitMQConfiguration.splitURIList(environment)
            if !list.isEmpty { return list }
        }
        return [Self.defaultURI]
    }

    /// The configuration for a connection named after the subcommand (visible in the broker's
    /// connection list), unless the URI names it (`?connection_name=`).
    func configuration(name: String) throws -> RabbitMQConfiguration {
        var configuration = try RabbitMQConfiguration(uris: effectiveURIs)
        if configuration.connectionName == nil { configuration.connectionName = name }
        return configuration
    }

    func connect(name: String) async throws -> RabbitMQConnection {
        try await RabbitMQConnection.connect(configuration: configuration(name: name))
    }
}
