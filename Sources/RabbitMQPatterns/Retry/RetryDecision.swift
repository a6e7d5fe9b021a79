import Foundation
import RabbitMQ

/// What the retry consumer does with a message whose handling failed: the pure part of the
/// retry pattern, unit-tested without a broker.
struct RetryDecision: Equatable {
    enum Failure: Equatable {
        /// The handler threw; retrying may help.
        case transient(String)
        /// The handler said retrying cannot help.
        case permanent(String)
        /// The body is not a valid envelope.
        case invalidEnvelope(String)
    }

    enum Destination: Equatable {
        /// The delay queue for this retry (index into the delays).
        case delay(index: Int)
        /// The dead-letter (parking) queue.
        case park(reason: String)
    }

    var destination: Destination
    /// The headers to publish the message with.
    var headers: RabbitMQFieldTable

    /// The decision for a message with `headers` that failed with `failure`, on a ladder of
    /// `delayCount` delays, at `now`.
    static func decide(
        headers original: RabbitMQFieldTable?, failure: Failure, delayCount: Int, now: Date
    ) -> RetryDecision {
        let retries = retryCount(original)
        var headers = strippedOfBrokerHeaders(original)
        if headers[RabbitMQRetryQueue.firstFailureAtHeader] == nil {
            headers[RabbitMQRetryQueue.firstFailureAtHeader] = .string(EnvelopeTimestamp.format(now))
        }
        let destination: Destination
        let text: String
        switch failure {
        case .transient(let error) where retries < delayCount:
            text = error
            destination = .delay(index: retries)
            headers[RabbitMQRetryQueue.retryCountHeader] = .int64(Int64(retries + 1))
        case .transient(let error):
            text = error
            destination = .park(reason: "retries-exhausted")
        case .permanent(let error):
            text = error
            destination = .park(reason: "permanent-failure")
        case .invalidEnvelope(let error):
            text = error
            destination = .park(reason: "invalid-envelope")
        }
        if case .park(let reason) = destination {
            headers[RabbitMQRetryQueue.retryCountHeader] = .int64(Int64(retries))
            headers[RabbitMQRetryQueue.deadLetterReasonHeader] = .string(reason)
        }
        headers[RabbitMQRetryQueue.lastErrorHeader] = .string(Self.truncated(text))
        return RetryDecision(destination: destination, headers: headers)
    }

    /// Our retry counter from `headers` (0 when absent or not an integer).
    static func retryCount(_ headers: RabbitMQFieldTable?) -> Int {
        guard let value = headers?[RabbitMQRetryQueue.retryCountHeader]?.int64Value, value > 0 else { return 0 }
        return Int(clamping: value)
    }

    /// The headers without what the broker adds: republishing `x-death` (dead-lettering)
    /// would make the broker's own bookkeeping grow, and we never read it; a quorum queue's
    /// `x-delivery-count` counts the deliveries of the copy being settled, and the broker
    /// sets it only on a redelivery, so on the republished copy it would claim redeliveries
    /// that never happened.
    static func strippedOfBrokerHeaders(_ headers: RabbitMQFieldTable?) -> RabbitMQFieldTable {
        RabbitMQFieldTable(
            (headers ?? [:]).entries
                .filter { entry in
                    entry.key != "x-death" && entry.key != "x-delivery-count" && !entry.key.hasPrefix("x-first-death-")
                        && !entry.key.hasPrefix("x-last-death-")
                }
                .map { ($0.key, $0.value) })
    }

    /// Error texts end up in every copy of the message; keep them bounded.
    static func truncated(_ text: String, limit: Int = 1024) -> String {
        guard text.utf8.count > limit else { return text }
        var result = ""
        for character in text {
            if result.utf8.count + character.utf8.count > limit - 3 { break }
            result.append(character)
        }
        return result + "..."
    }
}
