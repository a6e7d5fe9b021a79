/// Something that happened to a connection, delivered by ``RabbitMQConnection/events()``.
public enum RabbitMQConnectionEvent: Sendable, Hashable {
    /// The connection is open to this endpoint.
    case connected(endpoint: String)
    /// The broker stopped reading from this connection, usually because of a memory or disk
    /// alarm (`connection.blocked`); publishes wait until it is unblocked.
    case blocked(reason: String)
    /// The broker resumed reading from this connection.
    case unblocked
    /// The connection closed: with nil after ``RabbitMQConnection/close()``, else the error.
    case closed(RabbitMQError?)
}
