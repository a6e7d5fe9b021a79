import RabbitMQ
import Synchronization
import Testing

@testable import RabbitMQPatterns

/// A flag one task sets and another reads.
final class Flag: Sendable {
    private let value = Atomic(false)
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
}

@Suite("RPC error replies and call bookkeeping")
struct RPCLogicTests {
    @Test func anErrorReplyRoundTrips() {
        let body = RPCErrorReply.encode("unknown sku \"Z\"")
        #expect(String(decoding: body, as: UTF8.self) == #"{"error":"unknown sku \"Z\"","success":false}"#)
        #expect(RPCErrorReply.decode(body, headers: RPCErrorReply.headers) == "unknown sku \"Z\"")
    }

    @Test(arguments: [
        (#"  {"success": false, "error": "boom"}"#, "boom"),
        (#"{"success":false}"#, "the server reported a failure"),
        ("not json", "the server reported a failure"),
    ])
    func errorRepliesMarkedByTheHeaderAreRecognised(text: String, message: String) {
        #expect(RPCErrorReply.decode(Array(text.utf8), headers: ["x-rpc-error": true]) == message)
    }

    /// Only the header makes an error reply: a typed answer may say "success": false itself
    /// (issue 13: such a reply was thrown as a remoteError instead of returned).
    @Test(arguments: [
        #"{"success": false, "error": "boom"}"#, #"{"success": false, "reason": "out of stock"}"#,
        #"{"success": true, "error": "none"}"#, #"{"result": 1}"#, "42", "",
    ])
    func repliesWithoutTheHeaderAreNotErrors(text: String) {
        #expect(RPCErrorReply.decode(Array(text.utf8), headers: nil) == nil)
        #expect(RPCErrorReply.decode(Array(text.utf8), headers: ["x-rpc-error": false]) == nil)
        #expect(RPCErrorReply.decode(Array(text.utf8), headers: ["other": true]) == nil)
    }

    @Test func aLateReplyIsCountedAndDropped() async throws {
        let registry = RPCCallRegistry()
        try registry.register("a")
        registry.remove("a")  // the call timed out
        registry.resolve("a", with: .failure(CancellationError()), isReply: true)
        registry.resolve("never-sent", with: .failure(CancellationError()), isReply: true)
        registry.discardReply()
        #expect(registry.discardedReplies == 3)
        #expect(registry.inFlight == 0)
    }

    @Test func aReplyBeforeTheWaitIsKept() async throws {
        let registry = RPCCallRegistry()
        try registry.register("a")
        #expect(registry.inFlight == 1)
        let error = RabbitMQPatternsError(code: .remoteError, message: "early")
        registry.resolve("a", with: .failure(error), isReply: true)
        #expect(registry.inFlight == 0, "answered: no longer waiting for a reply")
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.wait("a") }
        #expect(registry.inFlight == 0)
        #expect(registry.discardedReplies == 0)
    }

    /// The broker closed one channel of the client: the calls whose requests went out on it
    /// fail with the error given, whether their callers wait already or not yet; calls on
    /// another channel go on waiting.
    @Test func aClosedChannelFailsOnlyItsOwnCalls() async throws {
        let registry = RPCCallRegistry()
        // Two live objects stand for the channels (a freed one's address, and identifier,
        // could be the next one's).
        let channels = (Flag(), Flag())
        let closed = ObjectIdentifier(channels.0)
        let other = ObjectIdentifier(channels.1)
        defer { withExtendedLifetime(channels) {} }
        try registry.register("waiting", channel: closed)
        try registry.register("publishing", channel: closed)
        try registry.register("elsewhere", channel: other)
        // Its caller may or may not be waiting yet when the channel closes: either way it fails.
        let waiter = Task { try await registry.wait("waiting") }
        let error = RabbitMQPatternsError(code: .closed, message: "channel closed")
        #expect(registry.channelClosed(closed, error: error) == 2)
        let first = await #expect(throws: RabbitMQPatternsError.self) { try await waiter.value }
        #expect(first?.message == "channel closed")
        let second = await #expect(throws: RabbitMQPatternsError.self) { try await registry.wait("publishing") }
        #expect(second?.message == "channel closed")
        #expect(registry.inFlight == 1, "the call on the other channel still waits")
        registry.resolve("elsewhere", with: .failure(CancellationError()), isReply: false)
        #expect(registry.inFlight == 0)
    }

    @Test func cancellingAWaitRemovesTheCall() async throws {
        let registry = RPCCallRegistry()
        try registry.register("a")
        let waiter = Task { try await registry.wait("a") }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(registry.inFlight == 0)
    }

    @Test func finishingFailsWaitingCallsAndLaterCalls() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        let ready = Task { try await registry.ready() }
        try registry.register("a")
        registry.finish(RabbitMQPatternsError(code: .closed, message: "stopped"))
        await #expect(throws: RabbitMQPatternsError.self) { try await ready.value }
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.wait("a") }
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.ready() }
        #expect(throws: RabbitMQPatternsError.self) { try registry.beginStarting() }
    }

    /// A reply (or a recorded outcome) that came in before its caller waited survives the
    /// client finishing: the caller gets that outcome, not `closed`.
    @Test func anOutcomeBeforeTheWaitSurvivesFinishing() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        try registry.register("a")
        try registry.register("b")
        registry.resolve("a", with: .failure(RabbitMQPatternsError(code: .remoteError, message: "early")), isReply: true)
        registry.beginDraining()
        registry.resolve("b", with: .failure(RabbitMQPatternsError(code: .unroutable, message: "returned")), isReply: false)
        await registry.drained()
        registry.finish(RabbitMQPatternsError(code: .closed, message: "stopped"))
        let first = await #expect(throws: RabbitMQPatternsError.self) { try await registry.wait("a") }
        #expect(first?.code == .remoteError)
        let second = await #expect(throws: RabbitMQPatternsError.self) { try await registry.wait("b") }
        #expect(second?.code == .unroutable)
    }

    /// A call that registers after the client finished is refused there, so the request is
    /// never published for a caller that would only be told `closed`.
    @Test func registeringAfterFinishingIsRefused() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        registry.finish(RabbitMQPatternsError(code: .closed, message: "stopped"))
        #expect(throws: RabbitMQPatternsError.self) { try registry.register("late") }
        #expect(registry.inFlight == 0)
    }

    /// Graceful shutdown of a client: new callers are refused with `closed`, and drained()
    /// returns once the last call in flight has an outcome (a reply, a failure, a removal).
    @Test func drainingRefusesNewCallersAndEndsWhenTheLastCallEnds() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        try registry.register("a")
        try registry.register("b")
        registry.beginDraining()
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.ready() }
        let ended = Flag()
        let drained = Task {
            await registry.drained()
            ended.set()
        }
        registry.resolve("a", with: .failure(CancellationError()), isReply: false)
        #expect(registry.inFlight == 1)
        // "b" is still in flight: the drain must park, not end. Wait for either (bounded).
        var spins = 0
        while !ended.isSet, !registry.isDrainAwaited, spins < 1_000_000 {
            spins += 1
            await Task.yield()
        }
        #expect(registry.isDrainAwaited)
        #expect(!ended.isSet, "drained() returned while a call was still in flight")
        registry.remove("b")
        await drained.value
        #expect(ended.isSet)
        #expect(registry.inFlight == 0)
        // Nothing in flight: at once.
        await registry.drained()
    }

    /// One drain at a time: a second drained() would have replaced the first's continuation
    /// (leaking it, and the run() waiting on it); it is a programming error that traps.
    /// Without the trap the second drain waits for ever: the limit makes that a failure.
    @Test(.timeLimit(.minutes(1))) func aSecondDrainTraps() async {
        await #expect(processExitsWith: .failure) {
            let registry = RPCCallRegistry()
            try registry.beginStarting()
            try registry.register("a")
            registry.beginDraining()
            let first = Task { await registry.drained() }
            var spins = 0
            while !registry.isDrainAwaited, spins < 1_000_000 {
                spins += 1
                await Task.yield()
            }
            await registry.drained()
            first.cancel()
        }
    }

    @Test func cancellingTheDrainEndsIt() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        try registry.register("a")
        registry.beginDraining()
        let drained = Task { await registry.drained() }
        drained.cancel()
        await drained.value
        #expect(registry.inFlight == 1)
    }
}
