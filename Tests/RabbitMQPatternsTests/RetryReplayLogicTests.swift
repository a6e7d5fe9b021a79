import Foundation
import RabbitMQ
import Testing

@testable import RabbitMQPatterns

/// Replays from the parking queue and the ledger that keeps a reconnect's copy off the
/// ladder: the pure parts, without a broker.
@Suite("Retry replays and the ledger")
struct RetryReplayLogicTests {
    static let parked: RabbitMQFieldTable = [
        "app": "x", "x-retry-count": .int64(3), "x-dead-letter-reason": "retries-exhausted",
        "x-last-error": "down", "x-first-failure-at": "2024-05-17T12:00:00.000Z",
    ]

    @Test func aMessageParkedByTheConsumerStartsANewLadderWithItsOldCountKept() throws {
        let headers = try #require(RetryDecision.startingOver(Self.parked, workQueue: "jobs"))
        #expect(RetryDecision.retryCount(headers) == 0)
        #expect(headers["x-retry-count"] == nil)
        #expect(headers["x-dead-letter-reason"] == nil)
        #expect(headers["x-previous-retry-count"] == .int64(3))
        #expect(headers["x-replay-count"] == .int64(1))
        #expect(headers["x-last-error"] == .string("down"), "the handler still sees why it was parked")
        #expect(headers["x-first-failure-at"] == .string("2024-05-17T12:00:00.000Z"))
        #expect(headers["app"] == .string("x"))
    }

    @Test func aSecondReplayAddsToTheCounts() throws {
        var parkedAgain = Self.parked
        parkedAgain["x-retry-count"] = .int64(2)
        parkedAgain["x-previous-retry-count"] = .int64(3)
        parkedAgain["x-replay-count"] = .int64(1)
        let headers = try #require(RetryDecision.startingOver(parkedAgain, workQueue: "jobs"))
        #expect(headers["x-previous-retry-count"] == .int64(5))
        #expect(headers["x-replay-count"] == .int64(2))
        #expect(RetryDecision.retryCount(headers) == 0)
    }

    @Test func aMessageTheBrokerParkedIsRecognisedByItsDeathInTheWorkQueue() throws {
        let death: RabbitMQFieldValue = .table(["queue": "jobs", "reason": "delivery_limit", "count": .int64(1)])
        let back: RabbitMQFieldValue = .table(["queue": "jobs.retry.1s", "reason": "expired", "count": .int64(1)])
        let headers = try #require(
            RetryDecision.startingOver(["x-retry-count": .int64(1), "x-death": .array([death, back])], workQueue: "jobs"))
        #expect(headers["x-replay-count"] == .int64(1))
        #expect(headers["x-previous-retry-count"] == .int64(1))
        #expect(RetryDecision.retryCount(headers) == 0)
    }

    @Test func aMessageOnItsLadderIsNotAReplay() {
        let fromDelay: RabbitMQFieldTable = [
            "x-retry-count": .int64(1),
            "x-death": .array([.table(["queue": "jobs.retry.1s", "reason": "expired", "count": .int64(1)])]),
        ]
        #expect(RetryDecision.startingOver(fromDelay, workQueue: "jobs") == fromDelay)
        #expect(RetryDecision.startingOver(nil, workQueue: "jobs") == nil)
        #expect(RetryDecision.startingOver(["app": "x"], workQueue: "jobs") == ["app": "x"])
    }

    /// The replayed message's next failure goes to the first delay queue and carries no
    /// parking reason; its replay counts travel with it.
    @Test func aReplayedMessageClimbsFromTheFirstDelay() throws {
        let headers = RetryDecision.startingOver(Self.parked, workQueue: "jobs")
        let decision = RetryDecision.decide(headers: headers, failure: .transient("again"), delayCount: 3, now: Date())
        #expect(decision.destination == .delay(index: 0))
        #expect(decision.headers["x-retry-count"] == .int64(1))
        #expect(decision.headers["x-dead-letter-reason"] == nil)
        #expect(decision.headers["x-replay-count"] == .int64(1))
        #expect(decision.headers["x-previous-retry-count"] == .int64(3))
        // Back from the delay queue it is on its new ladder, not replayed again.
        #expect(RetryDecision.startingOver(decision.headers, workQueue: "jobs") == decision.headers)
    }

    @Test func theLedgerLetsOneCopyOfAnAttemptOnTheLadder() {
        var ledger = RetryLedger(capacity: 4)
        let key = RetryLedger.Key(messageID: "m", retryCount: 0, replayCount: 0)
        #expect(ledger.claim(key) == .claimed)
        #expect(ledger.claim(key) == .inFlight, "the first copy's republish may yet fail")
        #expect(!ledger.isOnTheLadder(key))
        ledger.confirm(key)
        #expect(ledger.isOnTheLadder(key))
        #expect(ledger.claim(key) == .onTheLadder, "a second copy of a confirmed attempt")
        #expect(ledger.claim(RetryLedger.Key(messageID: "m", retryCount: 1, replayCount: 0)) == .claimed, "the next attempt")
        #expect(ledger.claim(RetryLedger.Key(messageID: "m", retryCount: 0, replayCount: 1)) == .claimed, "a replay")
    }

    @Test func aFailedRepublishGivesTheClaimBack() {
        var ledger = RetryLedger(capacity: 4)
        let key = RetryLedger.Key(messageID: "m", retryCount: 0, replayCount: 0)
        #expect(ledger.claim(key) == .claimed)
        ledger.release(key)
        #expect(!ledger.isOnTheLadder(key))
        #expect(ledger.claim(key) == .claimed)
    }

    @Test func theLedgerIsBoundedAndForgetsTheOldestFirst() {
        var ledger = RetryLedger(capacity: 3)
        let keys = (0..<10).map { RetryLedger.Key(messageID: "m\($0)", retryCount: 0, replayCount: 0) }
        for key in keys {
            #expect(ledger.claim(key) == .claimed)
            ledger.confirm(key)
        }
        #expect(ledger.count == 3)
        #expect(keys[7...].allSatisfy(ledger.isOnTheLadder))
        #expect(!keys[..<7].contains(where: ledger.isOnTheLadder))
    }
}
