import Logging

/// The I/O side of (re)connecting: a pass over the endpoints, and dropping a dead socket.
/// What to do about a failure, and when to try again, is the recovery plan's decision
/// (``ConnectionStateMachine/connectionLost(_:now:)``).
extension IOLoop {
    /// One pass over the endpoints (in order, or shuffled); returns the one that answered.
    /// A refused login stops the pass: other nodes of the cluster would refuse it too.
    func connect() throws(RabbitMQError) -> RabbitMQConfiguration.Endpoint {
        var failures: [String] = []
        var lastError: RabbitMQError?
        var endpoints = configuration.endpoints
        if configuration.endpointSelection == .shuffled { endpoints.shuffle(using: &random) }
        for endpoint in endpoints {
            do {
                let opened = try CConnection.open(
                    endpoint, configuration: configuration, clientProperties: clientProperties(), scratch: scratch)
                connection = opened
                core.setNegotiated(opened.negotiated)
                logger[metadataKey: LogKey.endpoint] = "\(endpoint)"
                logger.info(
                    "connected",
                    metadata: ["rabbitmq.heartbeat": "\(opened.negotiated.heartbeat)", "rabbitmq.frame_max": "\(opened.negotiated.frameMax)"])
                return endpoint
            } catch {
                logger.debug("connection attempt failed", metadata: [LogKey.endpoint: "\(endpoint)", LogKey.error: "\(error)"])
                if RecoveryPlan.isLoginRefusal(error) { throw error }
                failures.append("\(endpoint): \(error.message)")
                lastError = error
            }
        }
        if endpoints.count == 1, let lastError { throw lastError }
        throw RabbitMQError(
            code: lastError?.code ?? .connectFailed, scope: .connection,
            message: "no endpoint could be reached (\(failures.joined(separator: "; ")))",
            libraryStatus: lastError?.libraryStatus)
    }

    /// A recovery attempt: connect, and tell the core how it went.
    func connectAttempt(_ attempt: Int) {
        do {
            let endpoint = try connect()
            machine.connected(
                heartbeat: .seconds(core.negotiated.heartbeat), endpoint: endpoint.description, now: clock.now)
        } catch {
            machine.connectFailed(error, now: clock.now)
        }
    }

    /// Drops the socket and rabbitmq-c's state. Publishes buffered but never written give
    /// their room back (confirm-mode ones are in their window, to be published again).
    func dropConnection() {
        guard let connection else { return }
        self.connection = nil
        wantsWrite = false
        core.releasePublishes(connection.discardUnwritten())
        connection.destroy()
    }

    func clientProperties() -> RabbitMQFieldTable {
        // rabbitmq-c advertises only authentication_failure_close and
        // exchange_exchange_bindings; without the others the broker never sends
        // basic.cancel, connection.blocked or basic.nack. It merges this table into its own.
        var properties = configuration.clientProperties
        properties["product"] = "swift-rabbitmq"
        properties["platform"] = "Swift"
        properties["capabilities"] = [
            "publisher_confirms": true,
            "consumer_cancel_notify": true,
            "connection.blocked": true,
            "basic.nack": true,
            "authentication_failure_close": true,
            "exchange_exchange_bindings": true,
            "per_consumer_qos": true,
        ]
        if let name = configuration.connectionName { properties["connection_name"] = .string(name) }
        return properties
    }
}
