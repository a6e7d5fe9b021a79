import Foundation
import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Synchronization
import Testing

struct Quote: Codable, Sendable, Equatable {
    var sku: String
    var cents: Int
}

struct QuoteRequest: Codable, Sendable {
    var sku: String
}

/// RPC end to end: replies, timeouts, late replies, remote errors, unroutable requests,
/// expired requests, concurrency, both reply modes.
@Suite("Patterns: RPC", .timeLimit(.minutes(2)))
struct PatternsRPCTests {
    /// Runs `body` with a server on `queue` (declared first, so calls never race its
    /// declaration) and a client, and tears both down.
    static func withServerAndClient<Result: Sendable>(
        queue: String, server: @escaping @Sendable (RabbitMQConnection) -> RabbitMQRPCServer,
        client configuration: RabbitMQRPCClient.Configuration = .init(),
        _ body: @escaping @Sendable (RabbitMQRPCClient) async throws -> Result
    ) async throws -> Result {
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        let result = try await withThrowingTaskGroup(of: Void.self) { group in
            let server = server(connection)
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            return try await RabbitMQRPCClient.withClient(connection: connection, configuration: configuration, body)
        }
        try await setup.queueDelete(queue)
        try await connection.close()
        return result
    }

    @Test(arguments: [RabbitMQRPCClient.ReplyQueue.directReplyTo, .exclusiveQueue])
    func typedCallsGetTheirReplies(replyQueue: RabbitMQRPCClient.ReplyQueue) async throws {
        let queue = TestBroker.uniqueName("quotes")
        let quotes = try await Self.withServerAndClient(
            queue: queue,
            server: { connection in
                RabbitMQRPCServer(connection: connection, queue: queue) { (request: QuoteRequest) in
                    Quote(sku: request.sku, cents: request.sku.count * 100)
                }
            },
            client: .init(replyQueue: replyQueue)
        ) { client in
            [
                try await client.call(QuoteRequest(sku: "A-1"), routingKey: queue, as: Quote.self),
                try await client.call(QuoteRequest(sku: "B-22"), routingKey: queue, as: Quote.self),
            ]
        }
        #expect(quotes == [Quote(sku: "A-1", cents: 300), Quote(sku: "B-22", cents: 400)])
    }

    @Test func manyConcurrentCallsOnOneClientAreEachAnsweredWithTheirOwnReply() async throws {
        let queue = TestBroker.uniqueName("echo")
        let count = 500
        let replies = try await Self.withServerAndClient(
            queue: queue,
            server: { connection in
                RabbitMQRPCServer(connection: connection, queue: queue, configuration: .init(concurrency: 16)) { request in
                    // Finish out of order: later requests may overtake earlier ones.
                    if request.body.last.map({ $0 % 3 == 0 }) == true { await Task.yield() }
                    return request.body
                }
            }
        ) { client in
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<count {
                    group.addTask {
                        let reply = try await client.call(Array("request \(index)".utf8), routingKey: queue)
                        return (index, reply.bodyString)
                    }
                }
                var replies: [Int: String] = [:]
                for try await (index, body) in group { replies[index] = body }
                return replies
            }
        }
        #expect(replies.count == count)
        for index in 0..<count { #expect(replies[index] == "request \(index)") }
    }

    @Test func aCallTimesOutAndItsLateReplyIsDiscarded() async throws {
        let queue = TestBroker.uniqueName("slow")
        let gate = Gate()
        let (arrivals, arrived) = AsyncStream.makeStream(of: String.self)
        let handled = Atomic<Int>(0)
        try await Self.withServerAndClient(
            queue: queue,
            server: { connection in
                RabbitMQRPCServer(connection: connection, queue: queue, configuration: .init(concurrency: 1)) { request in
                    arrived.yield(request.bodyString)
                    if request.bodyString == "slow" { await gate.wait() }
                    handled.add(1, ordering: .relaxed)
                    return request.body
                }
            },
            // Without expiration, the slow request reaches the server however slow the machine
            // is (with it, it may expire in the queue, which another test covers).
            client: .init(expireRequests: false)
        ) { client in
            // The call runs beside the test so that the test can see the request reach the
            // server before the call gives up: the timeout covers publishing too, and a call
            // that timed out before its request left would have nothing late to discard.
            let slowCall = Task {
                try await client.call(Array("slow".utf8), routingKey: queue, timeout: .seconds(2))
            }
            var arrivalsIterator = arrivals.makeAsyncIterator()
            #expect(await arrivalsIterator.next() == "slow")
            let error = await #expect(throws: RabbitMQPatternsError.self) { try await slowCall.value }
            #expect(error?.code == .timeout)
            #expect(client.discardedReplies == 0)
            gate.open()
            // The server answers in order on one channel, so the late reply has been dispatched
            // (and dropped) by the time this call's reply arrives.
            let next = try await client.call(Array("fast".utf8), routingKey: queue)
            #expect(next.bodyString == "fast")
            #expect(client.discardedReplies == 1)
            #expect(handled.load(ordering: .relaxed) == 2)
        }
    }

    @Test func aHandlerErrorBecomesATypedRemoteError() async throws {
        struct OutOfStock: Error, CustomStringConvertible {
            var description: String { "sku Z-9 is out of stock" }
        }
        let raw = TestBroker.uniqueName("raw")
        let typed = TestBroker.uniqueName("typed")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(raw, durable: true)
        try await setup.queueDeclare(typed, durable: true)
        let chosen = TestBroker.uniqueName("chosen")
        let described = TestBroker.uniqueName("described")
        try await setup.queueDeclare(chosen, durable: true)
        try await setup.queueDeclare(described, durable: true)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let rawServer = RabbitMQRPCServer(connection: connection, queue: raw) { _ -> [UInt8] in throw OutOfStock() }
            let typedServer = RabbitMQRPCServer(connection: connection, queue: typed) { (request: QuoteRequest) in
                Quote(sku: request.sku, cents: 1)
            }
            let chosenServer = RabbitMQRPCServer(connection: connection, queue: chosen) { _ -> [UInt8] in
                throw RabbitMQPatternsError.permanentFailure("no such SKU")
            }
            let describingServer = RabbitMQRPCServer(
                connection: connection, queue: described, configuration: .init(repliesWithErrorDescriptions: true)
            ) { _ -> [UInt8] in throw OutOfStock() }
            group.addTask { try await rawServer.run() }
            group.addTask { try await typedServer.run() }
            group.addTask { try await chosenServer.run() }
            group.addTask { try await describingServer.run() }
            defer { group.cancelAll() }
            try await RabbitMQRPCClient.withClient(connection: connection) { client in
                // An arbitrary error's description stays on the server (issue 13: it was sent).
                let remote = await #expect(throws: RabbitMQPatternsError.self) {
                    try await client.call(Array("Z-9".utf8), routingKey: raw)
                }
                #expect(remote?.code == .remoteError)
                #expect(remote?.message == "the server could not handle the request")
                // The handler's own message goes to the caller.
                let refused = await #expect(throws: RabbitMQPatternsError.self) {
                    try await client.call(Array("Z-9".utf8), routingKey: chosen)
                }
                #expect(refused?.code == .remoteError)
                #expect(refused?.message == "no such SKU")
                // And every description, when the server is configured so.
                let told = await #expect(throws: RabbitMQPatternsError.self) {
                    try await client.call(Array("Z-9".utf8), routingKey: described)
                }
                #expect(told?.message == "sku Z-9 is out of stock")

                // The error reply itself is the documented JSON.
                let invalid = await #expect(throws: RabbitMQPatternsError.self) {
                    try await client.call(Array(#"{"item": "A"}"#.utf8), routingKey: typed)
                }
                #expect(invalid?.code == .remoteError)
                #expect(invalid?.message.contains("sku") == true, "names the missing field: \(String(describing: invalid))")
            }
        }
        for queue in [raw, typed, chosen, described] { try await setup.queueDelete(queue) }
        try await connection.close()
    }

    /// A typed reply whose JSON says `"success": false` is the caller's answer, not an error:
    /// only a reply marked by the server as an error is one (issue 13: it was thrown as a
    /// remoteError).
    @Test func aTypedReplyThatSaysSuccessFalseIsReturnedAsItsType() async throws {
        struct Availability: Codable, Sendable, Equatable {
            var success: Bool
            var error: String?
        }
        let queue = TestBroker.uniqueName("availability")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let server = RabbitMQRPCServer(connection: connection, queue: queue) { (sku: String) in
                Availability(success: false, error: "\(sku) is out of stock")
            }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            try await RabbitMQRPCClient.withClient(connection: connection) { client in
                let answer = try await client.call("Z-9", routingKey: queue, as: Availability.self)
                #expect(answer == Availability(success: false, error: "Z-9 is out of stock"))
            }
        }
        try await setup.queueDelete(queue)
        try await connection.close()
    }

    /// The largest message the broker takes (`max_message_size`: 128 MiB on 3.10, 16 MiB on 4.x).
    static func brokerMaxMessageSize() async throws -> Int {
        let output = try await TestBroker.ctl("eval", "application:get_env(rabbit, max_message_size).")
        guard let size = output.split(whereSeparator: { !$0.isNumber }).compactMap({ Int($0) }).first else {
            throw TestSupportError("no max_message_size in \(output)")
        }
        return size
    }

    /// A request the broker refuses with a channel error (a body over its size limit) fails
    /// with the broker's reason, as does the call in flight beside it on the same channel
    /// (at once, not at its timeout), the client opens a new channel, and later calls work.
    /// Issue 13: the client stopped, and every later call failed with `closed`.
    @Test(arguments: [RabbitMQRPCClient.ReplyQueue.directReplyTo, .exclusiveQueue])
    func aRequestTheBrokerRefusesFailsAloneAndTheClientGoesOn(replyQueue: RabbitMQRPCClient.ReplyQueue) async throws {
        let queue = TestBroker.uniqueName("refused")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        let oversize = try await Self.brokerMaxMessageSize() + 1
        let slowStarted = OneShot()
        let releaseSlow = OneShot()
        try await withThrowingTaskGroup(of: Void.self) { group in
            let server = RabbitMQRPCServer(connection: connection, queue: queue) { request -> [UInt8] in
                if request.bodyString == "slow" {
                    slowStarted.fire()
                    await releaseSlow.wait()
                }
                return Array(request.bodyString.uppercased().utf8)
            }
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            try await RabbitMQRPCClient.withClient(
                connection: connection, configuration: .init(timeout: .seconds(120), replyQueue: replyQueue)
            ) { (client: RabbitMQRPCClient) async throws -> Void in
                #expect(try await client.call(Array("first".utf8), routingKey: queue).bodyString == "FIRST")
                let slow = Task { try await client.call(Array("slow".utf8), routingKey: queue) }
                await slowStarted.wait()
                // The broker's reason, as the publish's error or the call's.
                let refused = await #expect(throws: (any Error).self) {
                    try await client.call([UInt8](repeating: 0x61, count: oversize), routingKey: queue)
                }
                #expect("\(String(describing: refused))".contains("larger than"), "\(String(describing: refused))")
                releaseSlow.fire()
                // The broker closed the channel with the other request in flight on it: that
                // call fails at once, not at its timeout, saying its request may have been
                // handled, and why the channel closed.
                let beside = await #expect(throws: RabbitMQPatternsError.self) { try await slow.value }
                #expect(beside?.code == .closed)
                #expect(beside?.message.contains("may or may not have been handled") == true)
                #expect(beside?.message.contains("larger than") == true, "\(String(describing: beside))")
                #expect(try await client.call(Array("after".utf8), routingKey: queue).bodyString == "AFTER")
            }
        }
        try await setup.queueDelete(queue)
        try await connection.close()
    }

    @Test func theErrorReplyIsPlainJSONForAnyClient() async throws {
        let queue = TestBroker.uniqueName("json-error")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        let server = RabbitMQRPCServer(connection: connection, queue: queue) { _ -> [UInt8] in
            throw RabbitMQPatternsError.permanentFailure("nope")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            // A bare client of our own: direct reply-to by hand.
            let channel = try await connection.openChannel()
            let replies = try await channel.consume(queue: "amq.rabbitmq.reply-to", autoAck: true)
            try await channel.publish(
                Array("x".utf8), routingKey: queue,
                properties: RabbitMQProperties(correlationID: "c-1", replyTo: "amq.rabbitmq.reply-to"))
            var iterator = replies.makeAsyncIterator()
            let reply = try #require(try await iterator.next())
            #expect(reply.properties.correlationID == "c-1")
            #expect(reply.properties.contentType == "application/json")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])
            #expect(json["error"] as? String == "nope")
            #expect(json["success"] as? Bool == false)
            #expect(json.count == 2)
        }
        try await setup.queueDelete(queue)
        try await connection.close()
    }

    @Test func aCallToNoQueueFailsAtOnceAsUnroutable() async throws {
        let connection = try await TestBroker.connect()
        try await RabbitMQRPCClient.withClient(connection: connection) { client in
            let error = await #expect(throws: RabbitMQPatternsError.self) {
                // A timeout far beyond the suite's limit: only the return can end this call.
                try await client.call(Array("?".utf8), routingKey: TestBroker.uniqueName("nobody"), timeout: .seconds(600))
            }
            #expect(error?.code == .unroutable)
        }
        try await connection.close()
    }

    @Test func aShortTimeoutFiresWhileALongerOneIsStillPending() async throws {
        // One timer serves every call: a call with an earlier deadline than the one it sleeps
        // towards must wake it, or the short call would wait as long as the long one.
        let queue = TestBroker.uniqueName("silent")
        let gate = Gate()
        let (arrivals, arrived) = AsyncStream.makeStream(of: String.self)
        try await Self.withServerAndClient(
            queue: queue,
            server: { connection in
                RabbitMQRPCServer(connection: connection, queue: queue, configuration: .init(concurrency: 4)) { request in
                    arrived.yield(request.bodyString)
                    await gate.wait()
                    return request.body
                }
            },
            client: .init(expireRequests: false)
        ) { client in
            let long = Task { try await client.call(Array("long".utf8), routingKey: queue, timeout: .seconds(600)) }
            defer { long.cancel() }
            // The long call must be registered (its request has reached the server) before the
            // short one starts: a task is not guaranteed to run before a 300 ms timeout elapses
            // on a loaded machine.
            var arrivalsIterator = arrivals.makeAsyncIterator()
            #expect(await arrivalsIterator.next() == "long")
            let error = await #expect(throws: RabbitMQPatternsError.self) {
                try await client.call(Array("short".utf8), routingKey: queue, timeout: .milliseconds(300))
            }
            #expect(error?.code == .timeout)
            #expect(error?.message.contains("300 ms") == true)
            #expect(client.callsInFlight == 1, "the long call is still waiting")
            gate.open()
            let reply = try await long.value
            #expect(reply.bodyString == "long")
        }
    }

    @Test func aRequestWhoseCallerGaveUpIsNeverProcessed() async throws {
        let queue = TestBroker.uniqueName("stale")
        let expired = TestBroker.uniqueName("stale-expired")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        // Expired requests are dead-lettered into `expired`: proof that the broker dropped
        // the request, where an empty request queue could also mean "not routed yet".
        try await setup.queueDeclare(expired, durable: true)
        try await setup.queueDeclare(
            queue, durable: true, arguments: ["x-dead-letter-exchange": "", "x-dead-letter-routing-key": .string(expired)])
        let seen = Recorded<String>()
        try await RabbitMQRPCClient.withClient(connection: connection) { client in
            // No server yet: the request waits in the queue until its expiration. The client
            // is ready, so the request is published before the call can time out.
            let error = await #expect(throws: RabbitMQPatternsError.self) {
                try await client.call(Array("stale".utf8), routingKey: queue, timeout: .milliseconds(200))
            }
            #expect(error?.code == .timeout)
            try await eventually("the stale request to expire") {
                try await setup.queueDeclare(expired, passive: true).messageCount == 1
            }
            // The queue exists with its dead-lettering arguments: the server must not declare it.
            let server = RabbitMQRPCServer(
                connection: connection, queue: queue, configuration: .init(declareQueue: false)
            ) { request in
                seen.append(request.bodyString)
                return request.body
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run() }
                defer { group.cancelAll() }
                let reply = try await client.call(Array("fresh".utf8), routingKey: queue)
                #expect(reply.bodyString == "fresh")
            }
        }
        #expect(seen.all == ["fresh"])
        try await setup.queueDelete(queue)
        try await setup.queueDelete(expired)
        try await connection.close()
    }

    @Test func stoppingTheClientFailsCallsInFlightAtOnce() async throws {
        let queue = TestBroker.uniqueName("silent")
        let connection = try await TestBroker.connect()
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        let client = RabbitMQRPCClient(connection: connection)
        let running = Task { try await client.run() }
        let call = Task { try await client.call(Array("?".utf8), routingKey: queue, timeout: .seconds(600)) }
        // The request is in the queue once the broker counts it; then stop the client.
        try await eventually("the request to be queued") {
            try await setup.queueDeclare(queue, passive: true).messageCount == 1
        }
        running.cancel()
        try await running.value
        let error = await #expect(throws: RabbitMQPatternsError.self) { try await call.value }
        #expect(error?.code == .closed)
        let later = await #expect(throws: RabbitMQPatternsError.self) {
            try await client.call(Array("?".utf8), routingKey: queue)
        }
        #expect(later?.code == .closed)
        try await setup.queueDelete(queue)
        try await connection.close()
    }
}

/// RPC across an outage of the client's connection.
@Suite("Patterns: RPC across outages", .timeLimit(.minutes(3)))
struct PatternsRPCOutageTests {
    /// The exclusive reply queue is declared again after recovery; calls keep their replies.
    @Test func anExclusiveReplyQueueFollowsRecovery() async throws {
        let queue = TestBroker.uniqueName("rpc-exclusive")
        let serverConnection = try await TestBroker.connect()
        try await serverConnection.openChannel().queueDeclare(queue, durable: true)
        let name = TestBroker.uniqueName("rpc-client")
        let clientConnection = try await TestBroker.connect(name: name)
        let log = ConnectionEventLog(clientConnection)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await RabbitMQRPCServer(connection: serverConnection, queue: queue, configuration: .init(declareQueue: false)) {
                    $0.body.reversed()
                }.run()
            }
            defer { group.cancelAll() }
            try await RabbitMQRPCClient.withClient(
                connection: clientConnection, configuration: .init(timeout: .seconds(20), replyQueue: .exclusiveQueue)
            ) { client in
                #expect(try await client.call(Array("abc".utf8), routingKey: queue).bodyString == "cba")
                try await TestBroker.closeConnection(named: name)
                try await log.recovered()
                #expect(try await client.call(Array("def".utf8), routingKey: queue).bodyString == "fed")
            }
        }
        try await serverConnection.openChannel().queueDelete(queue)
        try await serverConnection.close()
        try await clientConnection.close()
    }

    /// A call's timeout covers its publish: during an outage it fails by its own deadline, and
    /// its request is never sent once the connection is back. The outage lasts until the test
    /// ends it (a proxy that refuses new connections), not for a time.
    @Test func aCallsTimeoutCoversAPublishWaitingOutAnOutage() async throws {
        let queue = TestBroker.uniqueName("rpc-outage")
        let proxy = try TestBroker.proxy()
        defer { proxy.stop() }
        let connection = try await RabbitMQConnection.connect(configuration: TestBroker.configuration(through: proxy))
        let log = ConnectionEventLog(connection)
        let setup = try await connection.openChannel()
        try await setup.queueDeclare(queue, durable: true)
        try await RabbitMQRPCClient.withClient(connection: connection) { client in
            proxy.setMode(.rejectNewConnections)
            proxy.cutAll()
            try await log.next("disconnected") { if case .disconnected = $0 { true } else { false } }
            do {
                _ = try await client.call(Array("late".utf8), routingKey: queue, timeout: .milliseconds(500))
                Issue.record("the call succeeded during the outage")
            } catch let error as RabbitMQPatternsError {
                #expect(error.code == .timeout, "\(error)")
            }
            #expect(!log.all.contains { $0.isRecovered }, "recovered while the proxy refused connections: \(log.all)")
            proxy.setMode(.passThrough)
            try await log.recovered()
            // A marker published after recovery must be the first message in the queue.
            let marker = try await connection.openChannel()
            try await marker.confirmSelect()
            _ = try await marker.publishAndWaitForConfirm(Array("marker".utf8), routingKey: queue)
            let first = try await marker.get(queue: queue, autoAck: true)
            #expect(first?.bodyString == "marker", "the timed-out request was sent after recovery")
        }
        try await setup.queueDelete(queue)
        try await connection.close()
    }
}
