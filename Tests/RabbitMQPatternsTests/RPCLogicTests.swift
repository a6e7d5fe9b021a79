import RabbitMQ
import Testing

@testable import RabbitMQPatterns

@Suite("RPC error replies and call bookkeeping")
struct RPCLogicTests {
    @Test func anErrorReplyRoundTrips() {
        let body = RPCErrorReply.encode("unknown sku \"Z\"")
        #expect(String(decoding: body, as: UTF8.self) == #"{"error":"unknown sku \"Z\"","success":false}"#)
        #expect(RPCErrorReply.decode(body) == "unknown sku \"Z\"")
    }

    @Test(arguments: [
        (#"  {"success": false, "error": "boom"}"#, "boom"),
        (#"{"success":false}"#, "the server reported a failure"),
    ])
    func errorRepliesFromOtherLanguagesAreRecognised(text: String, message: String) {
        #expect(RPCErrorReply.decode(Array(text.utf8)) == message)
    }

    @Test(arguments: [
        #"{"success": true, "error": "none"}"#, #"{"success": 0, "error": "x"}"#, #"{"result": 1}"#, "42", "",
        #"["success", false]"#, #"{"success": false"#,
    ])
    func ordinaryRepliesAreNotErrors(text: String) {
        #expect(RPCErrorReply.decode(Array(text.utf8)) == nil)
    }

    @Test func aLateReplyIsCountedAndDropped() async throws {
        let registry = RPCCallRegistry()
        registry.register("a")
        registry.remove("a")  // the call timed out
        registry.resolve("a", with: .failure(CancellationError()), isReply: true)
        registry.resolve("never-sent", with: .failure(CancellationError()), isReply: true)
        registry.discardReply()
        #expect(registry.discardedReplies == 3)
        #expect(registry.inFlight == 0)
    }

    @Test func aReplyBeforeTheWaitIsKept() async throws {
        let registry = RPCCallRegistry()
        registry.register("a")
        #expect(registry.inFlight == 1)
        let error = RabbitMQPatternsError(code: .remoteError, message: "early")
        registry.resolve("a", with: .failure(error), isReply: true)
        #expect(registry.inFlight == 0, "answered: no longer waiting for a reply")
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.wait("a") }
        #expect(registry.inFlight == 0)
        #expect(registry.discardedReplies == 0)
    }

    @Test func cancellingAWaitRemovesTheCall() async throws {
        let registry = RPCCallRegistry()
        registry.register("a")
        let waiter = Task { try await registry.wait("a") }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(registry.inFlight == 0)
    }

    @Test func finishingFailsWaitingCallsAndLaterCalls() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        let ready = Task { try await registry.ready() }
        registry.register("a")
        registry.finish(RabbitMQPatternsError(code: .closed, message: "stopped"))
        await #expect(throws: RabbitMQPatternsError.self) { try await ready.value }
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.wait("a") }
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.ready() }
        #expect(throws: RabbitMQPatternsError.self) { try registry.beginStarting() }
    }

    /// Graceful shutdown of a client: new callers are refused with `closed`, and drained()
    /// returns once the last call in flight has an outcome (a reply, a failure, a removal).
    @Test func drainingRefusesNewCallersAndEndsWhenTheLastCallEnds() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        registry.register("a")
        registry.register("b")
        registry.beginDraining()
        await #expect(throws: RabbitMQPatternsError.self) { try await registry.ready() }
        let drained = Task { await registry.drained() }
        registry.resolve("a", with: .failure(CancellationError()), isReply: false)
        #expect(registry.inFlight == 1)
        registry.remove("b")
        await drained.value
        #expect(registry.inFlight == 0)
        // Nothing in flight: at once.
        await registry.drained()
    }

    @Test func cancellingTheDrainEndsIt() async throws {
        let registry = RPCCallRegistry()
        try registry.beginStarting()
        registry.register("a")
        registry.beginDraining()
        let drained = Task { await registry.drained() }
        drained.cancel()
        await drained.value
        #expect(registry.inFlight == 1)
    }
}
