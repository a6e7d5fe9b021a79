import Foundation
import RabbitMQ
import Testing

@testable import RabbitMQPatterns

@Suite("Retry decisions")
struct RetryDecisionTests {
    static let now = Date(timeIntervalSince1970: 1_715_949_000)
    static let earlier = "2024-05-17T12:00:00.000Z"

    @Test func aFirstFailureGoesToTheFirstDelayQueue() {
        let decision = RetryDecision.decide(headers: ["app": "x"], failure: .transient("boom"), delayCount: 3, now: Self.now)
        #expect(decision.destination == .delay(index: 0))
        #expect(decision.headers["x-retry-count"] == .int64(1))
        #expect(decision.headers["x-last-error"] == .string("boom"))
        #expect(decision.headers["x-first-failure-at"] == .string("2024-05-17T12:30:00.000Z"))
        #expect(decision.headers["app"] == .string("x"), "application headers are kept")
        #expect(decision.headers["x-dead-letter-reason"] == nil)
    }

    @Test func laterFailuresClimbTheLadderAndKeepTheFirstFailureTime() {
        for retries in 1..<3 {
            let decision = RetryDecision.decide(
                headers: ["x-retry-count": .int64(Int64(retries)), "x-first-failure-at": .string(Self.earlier)],
                failure: .transient("again"), delayCount: 3, now: Self.now)
            #expect(decision.destination == .delay(index: retries))
            #expect(decision.headers["x-retry-count"] == .int64(Int64(retries + 1)))
            #expect(decision.headers["x-first-failure-at"] == .string(Self.earlier))
        }
    }

    @Test func theLastFailureParksWithTheFullStory() {
        let decision = RetryDecision.decide(
            headers: ["x-retry-count": .int32(3), "x-first-failure-at": .string(Self.earlier)],
            failure: .transient("still down"), delayCount: 3, now: Self.now)
        #expect(decision.destination == .park(reason: "retries-exhausted"))
        #expect(decision.headers["x-retry-count"] == .int64(3))
        #expect(decision.headers["x-last-error"] == .string("still down"))
        #expect(decision.headers["x-first-failure-at"] == .string(Self.earlier))
        #expect(decision.headers["x-dead-letter-reason"] == .string("retries-exhausted"))
    }

    @Test func withoutDelaysAFailureParksAtOnce() {
        let decision = RetryDecision.decide(headers: nil, failure: .transient("x"), delayCount: 0, now: Self.now)
        #expect(decision.destination == .park(reason: "retries-exhausted"))
        #expect(decision.headers["x-retry-count"] == .int64(0))
    }

    @Test func permanentAndInvalidFailuresSkipTheLadder() {
        let permanent = RetryDecision.decide(headers: nil, failure: .permanent("no such customer"), delayCount: 3, now: Self.now)
        #expect(permanent.destination == .park(reason: "permanent-failure"))
        #expect(permanent.headers["x-last-error"] == .string("no such customer"))
        let invalid = RetryDecision.decide(
            headers: ["x-retry-count": .int64(1)], failure: .invalidEnvelope("missing field 'id'"), delayCount: 3, now: Self.now)
        #expect(invalid.destination == .park(reason: "invalid-envelope"))
        #expect(invalid.headers["x-retry-count"] == .int64(1))
        #expect(invalid.headers["x-last-error"] == .string("missing field 'id'"))
    }

    @Test func brokerDeathHeadersAreNotRepublished() {
        let headers: RabbitMQFieldTable = [
            "x-death": .array([.table(["count": .int64(1), "reason": "expired"])]),
            "x-first-death-reason": "expired", "x-first-death-queue": "q.retry.1s", "x-first-death-exchange": "",
            "x-last-death-reason": "expired", "x-last-death-queue": "q.retry.1s", "x-last-death-exchange": "",
            "x-retry-count": .int64(1), "trace": "t-1",
        ]
        let decision = RetryDecision.decide(headers: headers, failure: .transient("e"), delayCount: 3, now: Self.now)
        #expect(decision.headers.map(\.key).sorted() == ["trace", "x-first-failure-at", "x-last-error", "x-retry-count"])
    }

    /// A quorum queue's count belongs to the copy it delivered: carried over to the
    /// republished copy, it would claim redeliveries that copy never had (the broker sets
    /// the header only on a redelivery, so a stale one would survive a first delivery).
    @Test func theQuorumDeliveryCountIsNotRepublished() {
        let headers: RabbitMQFieldTable = ["x-delivery-count": .int64(3), "trace": "t-1"]
        for failure in [RetryDecision.Failure.transient("e"), .permanent("p"), .invalidEnvelope("i")] {
            let decision = RetryDecision.decide(headers: headers, failure: failure, delayCount: 3, now: Self.now)
            #expect(decision.headers["x-delivery-count"] == nil, "\(failure)")
            #expect(decision.headers["trace"] == "t-1")
        }
    }

    @Test func aCorruptCounterCountsAsZero() {
        #expect(RetryDecision.retryCount(["x-retry-count": "three"]) == 0)
        #expect(RetryDecision.retryCount(["x-retry-count": .int64(-4)]) == 0)
        #expect(RetryDecision.retryCount(["x-retry-count": .uint8(2)]) == 2)
    }

    @Test func longErrorsAreTruncated() {
        let text = String(repeating: "é", count: 2000)
        let truncated = RetryDecision.truncated(text)
        #expect(truncated.utf8.count <= 1024)
        #expect(truncated.hasSuffix("..."))
        #expect(RetryDecision.truncated("short") == "short")
    }

    @Test func delayQueuesAreNamedAfterTheirDelay() {
        #expect(RabbitMQRetryQueue.delayQueueName("q", .seconds(5)) == "q.retry.5s")
        #expect(RabbitMQRetryQueue.delayQueueName("q", .milliseconds(250)) == "q.retry.250ms")
    }

    @Test func theConfigurationIsValidated() {
        #expect(throws: Never.self) { try RabbitMQRetryQueue.Configuration().validate() }
        #expect(RabbitMQRetryQueue.Configuration().delays == [.seconds(1), .seconds(5), .seconds(25)])
        #expect(throws: RabbitMQPatternsError.self) {
            try RabbitMQRetryQueue.Configuration(delays: [.microseconds(10)]).validate()
        }
        #expect(throws: RabbitMQPatternsError.self) { try RabbitMQRetryQueue.Configuration(concurrency: 0).validate() }
        #expect(RabbitMQRetryQueue.Configuration().quorum == false)
        #expect(throws: Never.self) { try RabbitMQRetryQueue.Configuration(quorum: true, deliveryLimit: 5).validate() }
        #expect(throws: RabbitMQPatternsError.self) {
            try RabbitMQRetryQueue.Configuration(durable: false, quorum: true).validate()
        }
        #expect(throws: RabbitMQPatternsError.self) { try RabbitMQRetryQueue.Configuration(deliveryLimit: 5).validate() }
    }
}
