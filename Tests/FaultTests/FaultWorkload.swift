import Foundation
import RabbitMQ
import RabbitMQTestSupport
import Synchronization
import Testing

@testable import RabbitMQ

/// A publisher (confirms) and a consumer (manual acks) kept busy across a fault, with an
/// account kept outside the library under test: the ids the publisher saw confirmed, the ids
/// the consumer saw, and what the broker still holds once it is over. Confirmed, never seen
/// and not in the queue means lost; the test then fails at once, naming them.
///
/// It also proves that the fault hit the traffic: publishes and deliveries both before and
/// after it, and at the moment of the fault confirms outstanding and deliveries unacked.
final class FaultWorkload: Sendable {
    struct Settings: Sendable {
        var queue: String
        var exchange = ""
        var routingKey: String
        var mandatory = false
        /// Publishes after the fault (the run ends after them).
        var afterFault = 2_000
        /// Publish at most this many between two pauses of a millisecond (pacing), so that
        /// the broker keeps up on a loaded machine.
        var burst = 50
        var maxOutstanding = 500
        var prefetch: UInt16 = 200
        /// The consumer acks (multiple) every this many deliveries: some are always unacked.
        var ackEvery = 50
    }

    struct Account: Sendable {
        var published = 0
        var confirmed: Set<Int> = []
        /// Outcomes other than acked (nacks during a quorum election are published again).
        var notAcked: [Int: String] = [:]
        var republished: Set<Int> = []
        var seen: [Int: Int] = [:]
        var redelivered: Set<Int> = []
        var faultAt: ContinuousClock.Instant?
        var publishedBeforeFault = 0
        var deliveredBeforeFault = 0
        var deliveredAfterFault = 0
        var outstandingAtFault = 0
        var unackedAtFault = 0
        var unacked = 0
        var finishedPublishing = false
    }

    let settings: Settings
    let account = Mutex(Account())
    private let stopRequested = Atomic<Bool>(false)
    /// The publisher's channel now (it may open another after a run of nacks).
    private let publisherChannel = Mutex<RabbitMQChannel?>(nil)

    /// Publishes the broker has not confirmed yet, as the library counts them.
    var outstandingConfirms: Int { publisherChannel.withLock { $0?.shared.outstandingConfirms ?? 0 } }

    init(_ settings: Settings) {
        self.settings = settings
    }

    /// Publishes until `afterFault` messages were published after ``markFault()``; returns
    /// when every confirmation resolved. A nacked message counts as not confirmed (it is
    /// not in the account of what must arrive).
    func publish(on connection: RabbitMQConnection) async throws {
        var channel = try await connection.openChannel()
        try await channel.confirmSelect(maxOutstanding: settings.maxOutstanding)
        publisherChannel.withLock { $0 = channel }
        var pending: [(Int, RabbitMQConfirmation)] = []
        var index = 0
        var consecutiveNacks = 0
        while true {
            let (faulted, publishedAfter) = account.withLock { ($0.faultAt != nil, $0.published - $0.publishedBeforeFault) }
            if faulted && publishedAfter >= settings.afterFault { break }
            if stopRequested.load(ordering: .relaxed) { break }
            let id = index
            index += 1
            let confirmation = try await channel.publishWithConfirm(
                Array("payload \(id)".utf8), exchange: settings.exchange, routingKey: settings.routingKey,
                properties: RabbitMQProperties(deliveryMode: .persistent, messageID: "\(id)"), mandatory: settings.mandatory)
            account.withLock { $0.published += 1 }
            pending.append((id, confirmation))
            if index % settings.burst == 0 {
                try await Task.sleep(for: .milliseconds(1))
                // Collect what is resolved, in order, without waiting.
                while let (id, confirmation) = pending.first, confirmation.ticket.result != nil {
                    pending.removeFirst()
                    if try await record(id, confirmation) { consecutiveNacks = 0 } else { consecutiveNacks += 1 }
                }
                // A quorum queue nacks while it elects a leader; RabbitMQ 3.10 can leave a
                // channel that published during the election nacking for good: a new one works.
                if consecutiveNacks >= 20 {
                    try? await channel.close()
                    channel = try await connection.openChannel()
                    try await channel.confirmSelect(maxOutstanding: settings.maxOutstanding)
                    publisherChannel.withLock { $0 = channel }
                    consecutiveNacks = 0
                }
            }
        }
        for (id, confirmation) in pending { _ = try await record(id, confirmation) }
        account.withLock { $0.finishedPublishing = true }
    }

    /// The distinct outcomes of messages that were not acked, most frequent first, with
    /// their counts: " (nacked: 12, ...)", or "" when there are none.
    static func reasons(_ notAcked: [Int: String]) -> String {
        guard !notAcked.isEmpty else { return "" }
        var counts: [String: Int] = [:]
        for outcome in notAcked.values { counts[outcome, default: 0] += 1 }
        let top = counts.sorted { $0.value > $1.value }.prefix(3).map { "\($0.key): \($0.value)" }
        return " (" + top.joined(separator: "; ") + ")"
    }

    /// Notes how the broker answered. A confirmation that failed (its channel was closed
    /// after a run of nacks, with confirms still outstanding) is not acked: the message may
    /// or may not be in the queue, and the account does not count it as confirmed.
    private func record(_ id: Int, _ confirmation: RabbitMQConfirmation) async throws -> Bool {
        let outcome: String
        do {
            let answer = try await confirmation.outcome()
            outcome = answer == .acked ? "acked" : "\(answer)"
        } catch let error as RabbitMQError {
            outcome = "\(error)"
        }
        account.withLock { account in
            if confirmation.wasRepublished { account.republished.insert(id) }
            if outcome == "acked" { account.confirmed.insert(id) } else { account.notAcked[id] = outcome }
        }
        return outcome == "acked"
    }

    /// Consumes with manual acks (acking `ackEvery` at a time) until told to stop.
    func consume(on connection: RabbitMQConnection) async throws {
        let channel = try await connection.openChannel()
        try await channel.qos(prefetchCount: settings.prefetch)
        let consumer = try await channel.consume(queue: settings.queue)
        var sinceAck = 0
        for try await delivery in consumer {
            let id = Int(delivery.properties.messageID ?? "") ?? -1
            account.withLock { account in
                account.seen[id, default: 0] += 1
                if delivery.redelivered { account.redelivered.insert(id) }
                if account.faultAt == nil { account.deliveredBeforeFault += 1 } else { account.deliveredAfterFault += 1 }
                account.unacked += 1
            }
            sinceAck += 1
            if sinceAck >= settings.ackEvery {
                try delivery.ack(multiple: true)
                sinceAck = 0
                account.withLock { $0.unacked = 0 }
            }
            if stopRequested.load(ordering: .relaxed) { break }
        }
    }

    /// The fault is injected now: what was in flight is noted.
    func markFault() {
        let outstanding = outstandingConfirms
        account.withLock { account in
            account.faultAt = .now
            account.publishedBeforeFault = account.published
            account.outstandingAtFault = outstanding
            account.unackedAtFault = account.unacked
        }
    }

    /// Waits until confirms are outstanding and deliveries unacked, so the fault hits both.
    func waitUntilInFlight(after delivered: Int, timeout: Duration = .seconds(120)) async throws {
        try await eventually(timeout: timeout, "\(delivered) deliveries, with confirms outstanding and deliveries unacked") {
            outstandingConfirms > 0 && account.withLock { $0.deliveredBeforeFault >= delivered && $0.unacked > 0 }
        }
    }

    func stop() { stopRequested.store(true, ordering: .relaxed) }

    /// Waits (bounded) until the consumer saw every confirmed message, then takes the
    /// broker's account (a drain by a fresh connection) and checks that nothing confirmed
    /// was lost and that the fault hit traffic both ways. Returns a one-line report.
    func verify(
        drainingWith connect: @escaping @Sendable () async throws -> RabbitMQConnection, timeout: Duration = .seconds(90),
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let missing = account.withLock { account in account.confirmed.filter { account.seen[$0] == nil }.count }
            if missing == 0 && account.withLock({ $0.finishedPublishing }) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        stop()
        // What the broker still holds (a message the consumer never saw may still be queued).
        let drain = try await connect()
        let channel = try await drain.openChannel()
        var held = Set<Int>()
        while let delivery = try await channel.get(queue: settings.queue, autoAck: true) {
            held.insert(Int(delivery.properties.messageID ?? "") ?? -1)
        }
        try await drain.close()
        let account = self.account.withLock { $0 }
        let lost = account.confirmed.filter { account.seen[$0] == nil && !held.contains($0) }.sorted()
        #expect(lost.isEmpty, "confirmed, never consumed, not in the queue: \(lost.count) (\(lost.prefix(20)))", sourceLocation: sourceLocation)
        // The fault must have hit the traffic it claims to test.
        #expect(account.faultAt != nil, "no fault was injected", sourceLocation: sourceLocation)
        #expect(account.publishedBeforeFault > 0, "nothing was published before the fault", sourceLocation: sourceLocation)
        #expect(account.published - account.publishedBeforeFault > 0, "nothing was published after the fault", sourceLocation: sourceLocation)
        #expect(account.deliveredBeforeFault > 0, "nothing was delivered before the fault", sourceLocation: sourceLocation)
        #expect(account.deliveredAfterFault > 0, "nothing was delivered after the fault", sourceLocation: sourceLocation)
        #expect(account.outstandingAtFault > 0, "no confirm was outstanding when the fault hit", sourceLocation: sourceLocation)
        #expect(account.unackedAtFault > 0, "no delivery was unacked when the fault hit", sourceLocation: sourceLocation)
        let duplicates = account.seen.filter { $0.value > 1 }
        let unexplained = duplicates.filter { !account.redelivered.contains($0.key) && !account.republished.contains($0.key) }
        #expect(unexplained.isEmpty, "duplicates neither redelivered nor published again: \(unexplained.keys.sorted().prefix(10))", sourceLocation: sourceLocation)
        return """
            published \(account.published) (\(account.publishedBeforeFault) before the fault), confirmed \(account.confirmed.count), \
            not acked \(account.notAcked.count)\(Self.reasons(account.notAcked)), re-published \(account.republished.count), consumed \(account.seen.count) distinct \
            (\(account.deliveredBeforeFault) deliveries before, \(account.deliveredAfterFault) after), duplicates \(duplicates.count), \
            still queued \(held.count), lost \(lost.count); at the fault: \(account.outstandingAtFault) confirms outstanding, \
            \(account.unackedAtFault) deliveries unacked
            """
    }
}
