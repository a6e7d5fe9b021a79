import Metrics
import MetricsTestKit
import Testing

@testable import RabbitMQ

/// The metrics' decisions without a broker: how many deliveries an acknowledgement settles,
/// and what a connection reports for a tally and for its events, on an injected clock.
@Suite("Metrics logic")
struct MetricsLogicTests {
    @Test func inOrderAcknowledgementsCountOneEachAndKeepNothing() {
        var tally = SettlementTally()
        for tag in UInt64(1)...100 { #expect(tally.settle(tag: tag, multiple: false, epoch: 1) == 1) }
        #expect(tally.settledThrough == 100)
        #expect(tally.settledAbove.isEmpty)
    }

    @Test func multipleCountsWhatWasNotSettledBefore() {
        var tally = SettlementTally()
        #expect(tally.settle(tag: 3, multiple: false, epoch: 1) == 1)
        #expect(tally.settle(tag: 5, multiple: false, epoch: 1) == 1)
        #expect(tally.settledAbove == [3, 5])
        // 1, 2, 4 and 6 are new; 3 and 5 were settled singly.
        #expect(tally.settle(tag: 6, multiple: true, epoch: 1) == 4)
        #expect(tally.settledThrough == 6)
        #expect(tally.settledAbove.isEmpty)
        // Settled twice (the broker closes the channel for it): nothing more.
        #expect(tally.settle(tag: 4, multiple: false, epoch: 1) == 0)
        #expect(tally.settle(tag: 6, multiple: true, epoch: 1) == 0)
    }

    @Test func outOfOrderTagsCloseTheGapWhenItFills() {
        var tally = SettlementTally()
        #expect(tally.settle(tag: 2, multiple: false, epoch: 1) == 1)
        #expect(tally.settle(tag: 3, multiple: false, epoch: 1) == 1)
        #expect(tally.settle(tag: 3, multiple: false, epoch: 1) == 0)
        #expect(tally.settle(tag: 1, multiple: false, epoch: 1) == 1)
        #expect(tally.settledThrough == 3)
        #expect(tally.settledAbove.isEmpty)
    }

    @Test func aNewConnectionStartsANewTally() {
        var tally = SettlementTally()
        #expect(tally.settle(tag: 10, multiple: true, epoch: 1) == 10)
        // After a recovery, tags count from 1 again.
        #expect(tally.settle(tag: 2, multiple: true, epoch: 2) == 2)
        #expect(tally.epoch == 2)
    }

    @Test func aGapThatNeverClosesIsBounded() {
        var tally = SettlementTally()
        // Tag 1 was an auto-ack delivery: never settled.
        let limit = UInt64(SettlementTally.maxSettledAbove)
        for tag in 2...(limit + 2) { #expect(tally.settle(tag: tag, multiple: false, epoch: 1) == 1) }
        #expect(tally.settledAbove.count <= SettlementTally.maxSettledAbove)
        #expect(tally.settledThrough == limit + 2)
    }

    @Test func aReportSendsEachCountOnceAndOnlyMovedGauges() throws {
        let backend = TestMetrics()
        let metrics = ConnectionMetrics(connectionName: "c1", factory: backend)
        let dimensions = [("connection", "c1")]
        var tally = MetricsTally()
        #expect(tally.isEmpty)
        tally.published = 300
        tally.confirmed = 290
        tally.nacked = 10
        tally.delivered = 50
        tally.redelivered = 2
        tally.acked = 40
        tally.consumerNacked = 7
        tally.rejected = 3
        tally.returned = 1
        tally.gaugesMayHaveMoved = true
        var asked = 0
        metrics.report(&tally) {
            asked += 1
            return .init(channels: 2, publishBuffered: 5, confirmsOutstanding: 9)
        }
        #expect(tally.isEmpty)
        #expect(asked == 1)
        let expected: [(String, Int64)] = [
            (RabbitMQMetrics.published, 300), (RabbitMQMetrics.confirmed, 290), (RabbitMQMetrics.nacked, 10),
            (RabbitMQMetrics.delivered, 50), (RabbitMQMetrics.redelivered, 2), (RabbitMQMetrics.consumerAcked, 40),
            (RabbitMQMetrics.consumerNacked, 7), (RabbitMQMetrics.consumerRejected, 3), (RabbitMQMetrics.returned, 1),
        ]
        for (label, value) in expected {
            let counter = try backend.expectCounter(label, dimensions)
            #expect(counter.values == [value], "\(label)")
        }
        #expect(try backend.expectMeter(RabbitMQMetrics.channelsOpen, dimensions).values == [2])
        #expect(try backend.expectMeter(RabbitMQMetrics.publishBuffered, dimensions).values == [5])
        #expect(try backend.expectMeter(RabbitMQMetrics.confirmsOutstanding, dimensions).values == [9])

        // Nothing moved: no gauge is asked for; one moved: only it is recorded again.
        tally.published = 1
        metrics.report(&tally) {
            asked += 1
            return .init(channels: 2, publishBuffered: 5, confirmsOutstanding: 9)
        }
        #expect(asked == 1)
        tally.gaugesMayHaveMoved = true
        metrics.report(&tally) { .init(channels: 2, publishBuffered: 0, confirmsOutstanding: 9) }
        #expect(try backend.expectMeter(RabbitMQMetrics.publishBuffered, dimensions).values == [5, 0])
        #expect(try backend.expectMeter(RabbitMQMetrics.channelsOpen, dimensions).values == [2])
        #expect(try backend.expectCounter(RabbitMQMetrics.published, dimensions).values == [300, 1])
    }

    @Test func recoveryAndBlockingAreTimedOnTheLoopsClock() throws {
        let backend = TestMetrics()
        let metrics = ConnectionMetrics(connectionName: "c2", factory: backend)
        let dimensions = [("connection", "c2")]
        let start = ContinuousClock.now
        let error = RabbitMQError(code: .socketError, scope: .connection, message: "test")
        metrics.observe(.connected(endpoint: "a"), now: start)
        metrics.observe(.blocked(reason: "low on memory"), now: start + .milliseconds(10))
        metrics.observe(.unblocked, now: start + .milliseconds(35))
        metrics.observe(.blocked(reason: "low on memory"), now: start + .milliseconds(40))
        // Lost while blocked: the blocking ends with the connection.
        metrics.observe(.disconnected(error), now: start + .milliseconds(50))
        metrics.observe(.recoveryAttempt(1), now: start + .milliseconds(60))
        metrics.observe(.connected(endpoint: "a"), now: start + .milliseconds(200))
        metrics.observe(.recovered(endpoint: "a"), now: start + .milliseconds(250))
        metrics.observe(.closed(nil), now: start + .seconds(1))
        metrics.finish()

        #expect(try backend.expectMeter(RabbitMQMetrics.connectionsOpen, dimensions).values == [1, 0, 1, 0])
        #expect(try backend.expectCounter(RabbitMQMetrics.recoveries, dimensions).totalValue == 1)
        #expect(try backend.expectTimer(RabbitMQMetrics.recoveryDuration, dimensions).values == [200_000_000])
        #expect(try backend.expectTimer(RabbitMQMetrics.blockedDuration, dimensions).values == [25_000_000, 10_000_000])
    }

    @Test func connectionsThatShareANameAddUpAndTakeBackWhatTheyAdded() throws {
        let backend = TestMetrics()
        let first = ConnectionMetrics(connectionName: "pool", factory: backend)
        let second = ConnectionMetrics(connectionName: "pool", factory: backend)
        let dimensions = [("connection", "pool")]
        let now = ContinuousClock.now
        first.observe(.connected(endpoint: "a"), now: now)
        second.observe(.connected(endpoint: "a"), now: now)
        var tally = MetricsTally()
        tally.gaugesMayHaveMoved = true
        first.report(&tally) { .init(channels: 2, publishBuffered: 1, confirmsOutstanding: 0) }
        tally.gaugesMayHaveMoved = true
        second.report(&tally) { .init(channels: 3, publishBuffered: 0, confirmsOutstanding: 4) }
        #expect(try backend.expectMeter(RabbitMQMetrics.connectionsOpen, dimensions).lastValue == 2)
        #expect(try backend.expectMeter(RabbitMQMetrics.channelsOpen, dimensions).lastValue == 5)

        first.observe(.closed(nil), now: now)
        #expect(try backend.expectMeter(RabbitMQMetrics.connectionsOpen, dimensions).lastValue == 1)
        #expect(try backend.expectMeter(RabbitMQMetrics.channelsOpen, dimensions).lastValue == 3)
        #expect(try backend.expectMeter(RabbitMQMetrics.publishBuffered, dimensions).lastValue == 0)
        #expect(try backend.expectMeter(RabbitMQMetrics.confirmsOutstanding, dimensions).lastValue == 4)
        // Ended: a late report (the loop's last turn) or a second finish moves nothing.
        tally.gaugesMayHaveMoved = true
        first.report(&tally) { .init(channels: 2, publishBuffered: 1, confirmsOutstanding: 0) }
        first.finish()
        #expect(try backend.expectMeter(RabbitMQMetrics.channelsOpen, dimensions).lastValue == 3)
        #expect(try backend.expectMeter(RabbitMQMetrics.connectionsOpen, dimensions).lastValue == 1)
    }

    @Test func theNoOpBackendGetsNoMetricsAtAll() {
        #expect(ConnectionMetrics.make(connectionName: "c", factory: NOOPMetricsHandler.instance) == nil)
        #expect(ConnectionMetrics.make(connectionName: "c", factory: TestMetrics()) != nil)
    }
}
