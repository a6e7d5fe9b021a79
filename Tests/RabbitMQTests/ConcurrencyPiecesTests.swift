import Synchronization
import Testing

@testable import RabbitMQ

/// The pieces other threads wait on, written once: permits (publish buffer, confirm window,
/// the recovery gate), the broadcaster, confirmation tickets, a consumer's buffer.
@Suite("Concurrency pieces", .timeLimit(.minutes(1)))
struct ConcurrencyPiecesTests {
    @Test func permitsAreCountedAndGivenBack() {
        var pool = PermitPool(capacity: 2)
        let first = pool.tryAcquire()
        let second = pool.tryAcquire()
        let third = pool.tryAcquire()
        #expect(first && second && !third)
        let resumed = pool.release(1)
        #expect(resumed.isEmpty && pool.used == 1)
        pool.capacity = 0
        let afterShrink = pool.tryAcquire()
        #expect(!afterShrink, "a gate (no permits) never grants")
        #expect(pool.earliestDeadline == nil)
    }

    /// Defect: waits for room and for a confirm slot ignored cancellation.
    @Test func aWaitForAPermitEndsAtOnceWhenItsTaskIsCancelled() async {
        let state = LockedValue(PermitPool(capacity: 0))
        let id = state.withLock { $0.makeID() }
        let waiting = Task {
            try await PermitPool.wait(
                register: { continuation in
                    state.withLock { pool -> Result<PermitPool.Registration, any Error> in
                        if Task.isCancelled { return .failure(CancellationError()) }
                        return .success(pool.register(id: id, continuation: continuation, deadline: nil))
                    }
                },
                cancel: { state.withLock { $0.removeWaiter(id) } })
        }
        // Wait until it is queued (an event: the pool says so), then cancel.
        while state.withLock({ $0.waiterCount }) == 0 { await Task.yield() }
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(state.withLock { $0.waiterCount } == 0, "the cancelled waiter left the queue")
        #expect(state.withLock { $0.release(1) }.isEmpty, "a later release resumes nobody twice")
    }

    @Test func aReleaseResumesTheOldestWaiterFirst() async throws {
        let state = LockedValue(PermitPool(capacity: 1))
        #expect(state.withLock { $0.tryAcquire() })
        let order = LockedValue<[Int]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<3 {
                let id = state.withLock { $0.makeID() }
                group.addTask {
                    try await PermitPool.wait(
                        register: { continuation in state.withLock { .success($0.register(id: id, continuation: continuation, deadline: nil)) } },
                        cancel: { state.withLock { $0.removeWaiter(id) } })
                    order.withLock { $0.append(index) }
                    for ready in state.withLock({ $0.release(1) }) { ready.resume() }
                }
                while state.withLock({ $0.waiterCount }) < index + 1 { await Task.yield() }
            }
            for ready in state.withLock({ $0.release(1) }) { ready.resume() }
            try await group.waitForAll()
        }
        #expect(order.withLock { $0 } == [0, 1, 2])
    }

    @Test func expiredWaitersAreHandedBackOnce() async {
        let state = LockedValue(PermitPool(capacity: 0))
        let deadline = ContinuousClock.now + .seconds(5)
        let id = state.withLock { $0.makeID() }
        let waiting = Task {
            try await PermitPool.wait(
                register: { continuation in state.withLock { .success($0.register(id: id, continuation: continuation, deadline: deadline)) } },
                cancel: { state.withLock { $0.removeWaiter(id) } })
        }
        while state.withLock({ $0.waiterCount }) == 0 { await Task.yield() }
        #expect(state.withLock { $0.earliestDeadline } == deadline)
        #expect(state.withLock { $0.expire(now: deadline - .seconds(1)) }.isEmpty)
        let expired = state.withLock { $0.expire(now: deadline) }
        #expect(expired.count == 1)
        for continuation in expired { continuation.resume(throwing: RabbitMQError(code: .timeout, message: "late")) }
        await #expect(throws: RabbitMQError.self) { try await waiting.value }
        #expect(state.withLock { $0.expire(now: deadline + .seconds(10)) }.isEmpty)
    }

    @Test func theBroadcasterReachesEverySubscriberAndEndsThemAll() async {
        let broadcaster = Broadcaster<Int>(bufferSize: 2)
        let first = broadcaster.subscribe()
        let second = broadcaster.subscribe()
        for value in 1...3 { broadcaster.yield(value) }
        broadcaster.finish()
        var seen: [[Int]] = []
        for stream in [first, second] {
            var values: [Int] = []
            for await value in stream { values.append(value) }
            seen.append(values)
        }
        #expect(seen == [[2, 3], [2, 3]], "each keeps the newest values")
        let late = broadcaster.subscribe()
        for await _ in late { Issue.record("a subscription after the end got a value") }
    }

    /// Defect: a task awaiting a confirmation could not be cancelled.
    @Test func cancellingOneWaiterOfAConfirmationLeavesTheOthersWaiting() async throws {
        let ticket = ConfirmTicket()
        let cancelled = Task { try await ticket.wait() }
        let kept = Task { try await ticket.wait() }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        ticket.resolve(.success(.acked))
        #expect(try await kept.value == .acked)
        #expect(try await ticket.wait() == .acked, "a late waiter gets the outcome at once")
    }

    @Test func staleDeliveriesInABufferAreNeverHandedOut() async throws {
        let core = ConnectionCore(configuration: RabbitMQConfiguration(), id: 0, name: "t", wakeDescriptor: try IOLoop.makeWakeDescriptor())
        let shared = ChannelShared(number: 1, core: core)
        let buffer = DeliveryBuffer()
        func delivery(_ tag: UInt64, epoch: UInt64, settleable: Bool) -> RabbitMQDelivery {
            var delivery = RabbitMQDelivery(
                body: [], properties: .init(), exchange: "", routingKey: "q", redelivered: false, deliveryTag: tag, consumerTag: "c",
                messageCount: nil, channel: nil, epoch: epoch)
            if settleable { delivery.settleOn(shared) }
            return delivery
        }
        _ = buffer.push(delivery(1, epoch: 1, settleable: true))
        _ = buffer.push(delivery(2, epoch: 1, settleable: false))
        buffer.dropStale(before: 2)
        _ = buffer.push(delivery(3, epoch: 2, settleable: true))
        let (batch, _) = try await buffer.nextBatch(returning: [])
        #expect(batch.map(\.deliveryTag) == [2, 3], "auto-ack deliveries are never dropped: they are gone from the broker")
        #expect(buffer.isStale(delivery(9, epoch: 1, settleable: true)))
        #expect(!buffer.isStale(delivery(9, epoch: 1, settleable: false)))
    }

    @Test func stoppingAConsumerThrowsAtOnceDropsWhatWasBufferedAndCancelsIt() async throws {
        let buffer = DeliveryBuffer()
        let cancelled = LockedValue(false)
        buffer.setOnCancel { cancelled.withLock { $0 = true } }
        _ = buffer.push(
            RabbitMQDelivery(
                body: [], properties: .init(), exchange: "", routingKey: "", redelivered: false, deliveryTag: 1, consumerTag: "",
                messageCount: nil, channel: nil, epoch: 0))
        buffer.stop(throwing: RabbitMQError(code: .unexpectedReply, message: "republish failed"))
        #expect(cancelled.withLock { $0 }, "the consumer is cancelled on the broker")
        await #expect(throws: RabbitMQError.self) { _ = try await buffer.nextBatch(returning: []) }
        let after = try await buffer.nextBatch(returning: [])
        #expect(after.0.isEmpty, "then the sequence is over; the buffered delivery was not handed out")
    }
}
