import Foundation
import RabbitMQ

/// One attempt at handling a message of a ``RabbitMQRetryQueue``, as its handler sees it.
/// The retry consumer acknowledges, delays or parks the message from what the handler does.
public struct RabbitMQRetryAttempt<Payload: Codable & Sendable>: Sendable {
    /// The decoded envelope.
    public let envelope: RabbitMQEnvelope<Payload>
    /// 1 for the first delivery, 2 for the first retry, and so on.
    public let attempt: Int
    /// The number of the last attempt: the number of delays plus one. A failure of that
    /// attempt parks the message.
    public let maxAttempts: Int
    /// Why the previous attempt failed (nil on the first attempt).
    public let lastError: String?
    /// When the first attempt failed (nil on the first attempt). Kept across replays: the
    /// message's first failure ever.
    public let firstFailureAt: Date?
    /// The message's AMQP properties and headers (for a replayed message, as the new ladder
    /// starts: see ``RabbitMQRetryQueue`` on replays).
    public let properties: RabbitMQProperties
    /// How many times the message was replayed from the dead-letter queue into the work
    /// queue; each replay starts a new ladder at attempt 1. 0 for a message never parked.
    public let replayCount: Int
    /// The retries of the message's ladders before its latest replay, summed. 0 for a message
    /// never parked.
    public let previousRetryCount: Int

    /// Creates an attempt (for testing handlers).
    public init(
        envelope: RabbitMQEnvelope<Payload>, attempt: Int, maxAttempts: Int, lastError: String? = nil,
        firstFailureAt: Date? = nil, properties: RabbitMQProperties = .init(), replayCount: Int = 0,
        previousRetryCount: Int = 0
    ) {
        self.envelope = envelope
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.lastError = lastError
        self.firstFailureAt = firstFailureAt
        self.properties = properties
        self.replayCount = replayCount
        self.previousRetryCount = previousRetryCount
    }

    /// The payload, ``RabbitMQEnvelope/data``.
    public var data: Payload { envelope.data }

    /// How many times a quorum work queue handed out this message before without it being
    /// settled (a consumer that crashed or stopped while handling it): nil or 0 otherwise.
    /// Failed attempts do not count; see ``RabbitMQRetryQueue``.
    public var deliveryCount: Int? {
        guard let value = properties.headers?["x-delivery-count"]?.int64Value, value >= 0 else { return nil }
        return Int(clamping: value)
    }

    /// Whether a failure now parks the message instead of retrying it.
    public var isLastAttempt: Bool { attempt >= maxAttempts }
}
