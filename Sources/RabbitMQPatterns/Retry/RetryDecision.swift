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

    /// `headers` as the start of a new ladder when the message was replayed from the parking
    /// queue into `workQueue`, else unchanged: the retry count moves into
    /// ``RabbitMQRetryQueue/previousRetryCountHeader`` (added to what is there),
    /// ``RabbitMQRetryQueue/replayCountHeader`` goes up by one, the parking reason goes.
    ///
    /// A pure function of the headers, so a replayed message that is handed out again (its
    /// consumer crashed) is the same new ladder, not a second replay.
    static func startingOver(_ headers: RabbitMQFieldTable?, workQueue: String) -> RabbitMQFieldTable? {
        guard var headers, isReplay(headers, workQueue: workQueue) else { return headers }
        headers[RabbitMQRetryQueue.previousRetryCountHeader] = .int64(
            Int64(count(RabbitMQRetryQueue.previousRetryCountHeader, in: headers) + retryCount(headers)))
        headers[RabbitMQRetryQueue.replayCountHeader] = .int64(Int64(replayCount(headers) + 1))
        headers[RabbitMQRetryQueue.retryCountHeader] = nil
        headers[RabbitMQRetryQueue.deadLetterReasonHeader] = nil
        return headers
    }

    /// Whether a message in the work queue came from the parking queue. Two marks say so: the
    /// ``RabbitMQRetryQueue/deadLetterReasonHeader`` that the consumer stamps on what it parks
    /// (and strips from everything else), or an `x-death` entry for the work queue itself,
    /// which only the broker's own parking writes (a quorum queue's delivery limit, a TTL or
    /// length policy: the work queue dead-letters into nothing but the parking queue).
    static func isReplay(_ headers: RabbitMQFieldTable, workQueue: String) -> Bool {
        if headers[RabbitMQRetryQueue.deadLetterReasonHeader] != nil { return true }
        guard case .array(let deaths)? = headers["x-death"] else { return false }
        return deaths.contains { $0.tableValue?["queue"]?.stringValue == workQueue }
    }

    /// How many times the message was replayed (0 when absent or not an integer).
    static func replayCount(_ headers: RabbitMQFieldTable?) -> Int {
        count(RabbitMQRetryQueue.replayCountHeader, in: headers)
    }

    /// The retries of the message's earlier ladders (0 when absent or not an integer).
    static func previousRetryCount(_ headers: RabbitMQFieldTable?) -> Int {
        count(RabbitMQRetryQueue.previousRetryCountHeader, in: headers)
    }

    private static func count(_ header: String, in headers: RabbitMQFieldTable?) -> Int {
        guard let value = headers?[header]?.int64Value, value > 0 else { return 0 }
        return Int(clamping: value)
    }

    /// Our retry counter from `headers` (0 when absent or not an integer).
    static func retryCount(_ headers: RabbitMQFieldTable?) -> Int {
        count(RabbitMQRetryQueue.retryCountHeader, in: headers)
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
