/// Something that happened to a connection, delivered by ``RabbitMQConnection/events()``.
public enum RabbitMQConnectionEvent: Sendable, Hashable {
    /// The connection is open to this endpoint (first connect, and every reconnect).
    case connected(endpoint: String)
    /// The connection was lost; recovery starts (unless it is disabled).
    case disconnected(RabbitMQError)
    /// Recovery attempt `n` (a pass over the endpoints) is starting.
    case recoveryAttempt(Int)
    /// Recovery finished: channels, topology and every consumer are back on this endpoint.
    case recovered(endpoint: String)
    /// Recovery gave up (attempts exhausted or a refused login); the connection is closed.
    case recoveryFailed(RabbitMQError)
    /// A server-named queue was re-declared under a new name during recovery; bindings and
    /// consumers followed it.
    case queueRenamed(from: String, to: String)
    /// One recorded entity could not be restored (for example 404 for a queue that lived on
    /// a node that is gone); recovery went on with the rest.
    case topologyRecoveryFailed(entity: String, error: RabbitMQError)
    /// The broker stopped reading from this connection, usually because of a memory or disk
    /// alarm (`connection.blocked`); publishes wait until it is unblocked.
    case blocked(reason: String)
    /// The broker resumed reading from this connection.
    case unblocked
    /// The connection closed for good: with nil after ``RabbitMQConnection/close()``, else the error.
    case closed(RabbitMQError?)
}

/// What ``RabbitMQConnection/updateSecret(_:reason:)`` did with a new secret.
public enum RabbitMQSecretUpdate: Sendable, Hashable {
    /// The broker took it on the open connection (`connection.update-secret-ok`); later
    /// logins use it too.
    case applied
    /// Kept for the next login only (recovery's): the connection was recovering or was lost
    /// before the broker answered, or rabbitmq-c (before 0.12) cannot read the answer.
    case nextLogin
}
