import Synchronization

/// What the broker said about a message published in confirm mode.
public enum RabbitMQPublishOutcome: Sendable, Hashable {
    /// The broker took responsibility for the message (`basic.ack`).
    case acked
    /// The broker could not take it (`basic.nack`), for example a full queue with
    /// `x-overflow: reject-publish`. Publish it again or report it.
    case nacked
    /// The message was mandatory and unroutable: the broker returned it, then acked it.
    indirect case returned(RabbitMQReturnedMessage)
}

/// A handle on the pending confirmation of one publish.
///
/// ```swift
/// let confirmation = try await channel.publishWithConfirm(body, routingKey: "orders")
/// guard try await confirmation.outcome() == .acked else { ... }
/// ```
public struct RabbitMQConfirmation: Sendable {
    let ticket: ConfirmTicket

    /// Whether the connection was lost before the broker confirmed the message and recovery
    /// published it again: the broker may then hold it twice (deduplicate by message id).
    public var wasRepublished: Bool { ticket.wasRepublished }

    /// Suspends until the broker confirms the message, then returns the outcome.
    ///
    /// - Throws: ``RabbitMQError`` when the channel or connection closed before the broker
    ///   answered: the message may or may not have been routed.
    public func outcome() async throws -> RabbitMQPublishOutcome {
        try await ticket.wait()
    }
}
