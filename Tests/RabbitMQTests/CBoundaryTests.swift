import CRabbitMQ
import Glibc
import Synchronization
import Testing

@testable import RabbitMQ

/// The C boundary without a broker: method ids and encoders against rabbitmq-c's own codec,
/// the frame writer on a socket pair, the watchdog's ownership of descriptors, field tables
/// nested too deep.
@Suite("C boundary")
struct CBoundaryTests {
    @Test func methodIdsAreRabbitMQCs() {
        let pairs: [(AMQPMethodID, amqp_method_number_t)] = [
            (.connectionClose, AMQP_CONNECTION_CLOSE_METHOD), (.connectionCloseOk, AMQP_CONNECTION_CLOSE_OK_METHOD),
            (.connectionBlocked, AMQP_CONNECTION_BLOCKED_METHOD), (.connectionUnblocked, AMQP_CONNECTION_UNBLOCKED_METHOD),
            (.channelOpen, AMQP_CHANNEL_OPEN_METHOD), (.channelOpenOk, AMQP_CHANNEL_OPEN_OK_METHOD),
            (.channelClose, AMQP_CHANNEL_CLOSE_METHOD), (.channelCloseOk, AMQP_CHANNEL_CLOSE_OK_METHOD),
            (.exchangeDeclare, AMQP_EXCHANGE_DECLARE_METHOD), (.exchangeDeclareOk, AMQP_EXCHANGE_DECLARE_OK_METHOD),
            (.exchangeDelete, AMQP_EXCHANGE_DELETE_METHOD), (.exchangeDeleteOk, AMQP_EXCHANGE_DELETE_OK_METHOD),
            (.exchangeBind, AMQP_EXCHANGE_BIND_METHOD), (.exchangeBindOk, AMQP_EXCHANGE_BIND_OK_METHOD),
            (.exchangeUnbind, AMQP_EXCHANGE_UNBIND_METHOD), (.exchangeUnbindOk, AMQP_EXCHANGE_UNBIND_OK_METHOD),
            (.queueDeclare, AMQP_QUEUE_DECLARE_METHOD), (.queueDeclareOk, AMQP_QUEUE_DECLARE_OK_METHOD),
            (.queueBind, AMQP_QUEUE_BIND_METHOD), (.queueBindOk, AMQP_QUEUE_BIND_OK_METHOD),
            (.queuePurge, AMQP_QUEUE_PURGE_METHOD), (.queuePurgeOk, AMQP_QUEUE_PURGE_OK_METHOD),
            (.queueDelete, AMQP_QUEUE_DELETE_METHOD), (.queueDeleteOk, AMQP_QUEUE_DELETE_OK_METHOD),
            (.queueUnbind, AMQP_QUEUE_UNBIND_METHOD), (.queueUnbindOk, AMQP_QUEUE_UNBIND_OK_METHOD),
            (.basicQos, AMQP_BASIC_QOS_METHOD), (.basicQosOk, AMQP_BASIC_QOS_OK_METHOD),
            (.basicConsume, AMQP_BASIC_CONSUME_METHOD), (.basicConsumeOk, AMQP_BASIC_CONSUME_OK_METHOD),
            (.basicCancel, AMQP_BASIC_CANCEL_METHOD), (.basicCancelOk, AMQP_BASIC_CANCEL_OK_METHOD),
            (.basicPublish, AMQP_BASIC_PUBLISH_METHOD), (.basicReturn, AMQP_BASIC_RETURN_METHOD),
            (.basicDeliver, AMQP_BASIC_DELIVER_METHOD), (.basicGet, AMQP_BASIC_GET_METHOD),
            (.basicGetOk, AMQP_BASIC_GET_OK_METHOD), (.basicGetEmpty, AMQP_BASIC_GET_EMPTY_METHOD),
            (.basicAck, AMQP_BASIC_ACK_METHOD), (.basicReject, AMQP_BASIC_REJECT_METHOD), (.basicNack, AMQP_BASIC_NACK_METHOD),
            (.confirmSelect, AMQP_CONFIRM_SELECT_METHOD), (.confirmSelectOk, AMQP_CONFIRM_SELECT_OK_METHOD),
        ]
        for (swift, c) in pairs { #expect(swift.rawValue == c, "\(swift)") }
    }

    static let outbound: [OutboundMethod] = [
        .channelOpen, .channelClose(replyCode: 200, replyText: "Goodbye"), .channelCloseOk,
        .connectionClose(replyCode: 320, replyText: "bye"), .connectionCloseOk,
        .request(.exchangeDeclare(name: "x", type: "topic", passive: false, durable: true, autoDelete: true, internal: false, arguments: ["alternate-exchange": "ae"])),
        .request(.exchangeDelete(name: "x", ifUnused: true)),
        .request(.exchangeBind(destination: "d", source: "s", routingKey: "k.#", arguments: [:])),
        .request(.exchangeUnbind(destination: "d", source: "s", routingKey: "k.#", arguments: [:])),
        .request(.queueDeclare(name: "q", passive: true, durable: false, exclusive: true, autoDelete: false, arguments: ["x-max-length": .int64(10)])),
        .request(.queueBind(queue: "q", exchange: "x", routingKey: "k", arguments: ["x-match": "all"])),
        .request(.queueUnbind(queue: "q", exchange: "x", routingKey: "k", arguments: [:])),
        .request(.queuePurge(name: "q")), .request(.queueDelete(name: "q", ifUnused: false, ifEmpty: true)),
        .request(.basicQos(prefetchCount: 250, global: true)), .request(.basicGet(queue: "q", noAck: true)), .request(.confirmSelect),
        .basicConsume(ConsumeRequest(queue: "q", consumerTag: "tag", noAck: false, exclusive: true, arguments: ["x-priority": .int32(5)])),
        .basicCancel(consumerTag: "tag"), .basicAck(deliveryTag: 1 << 40, multiple: true),
        .basicNack(deliveryTag: 7, multiple: false, requeue: false), .basicReject(deliveryTag: 9, requeue: true),
    ]

    /// Each method is encoded by our one encoder and decoded by rabbitmq-c's decoder:
    /// every field must come back (a field in the wrong place would not).
    @Test(arguments: outbound)
    func everyOutboundMethodSurvivesRabbitMQCsCodec(_ method: OutboundMethod) throws {
        let scratch = ScratchPool()
        let decodePool = ScratchPool()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let (id, length) = buffer.withUnsafeMutableBytes { raw in
            scratch.withCMethod(method) { id, decoded in
                (id, amqp_encode_method(id, decoded, amqp_bytes_t(len: raw.count, bytes: raw.baseAddress)))
            }
        }
        try #require(length >= 0)
        var decoded: UnsafeMutableRawPointer?
        let status = buffer.withUnsafeMutableBytes { raw in
            amqp_decode_method(id, decodePool.pool, amqp_bytes_t(len: Int(length), bytes: raw.baseAddress), &decoded)
        }
        try #require(status == AMQP_STATUS_OK.rawValue)
        let again = scratch.withCMethod(method) { _, original in
            // Compare rabbitmq-c's two structures field by field through our decoder where it
            // has one, and byte for byte of the re-encoding otherwise.
            var first = [UInt8](repeating: 0, count: 4096)
            var second = [UInt8](repeating: 0, count: 4096)
            let a = first.withUnsafeMutableBytes { amqp_encode_method(id, original, amqp_bytes_t(len: $0.count, bytes: $0.baseAddress)) }
            let b = second.withUnsafeMutableBytes { amqp_encode_method(id, decoded!, amqp_bytes_t(len: $0.count, bytes: $0.baseAddress)) }
            return a == b && first[..<Int(a)] == second[..<Int(b)]
        }
        #expect(again)
    }

    @Test func inboundMethodsAreCopiedOutOfRabbitMQCsStructures() {
        let pool = ScratchPool()
        var close = amqp_channel_close_t(reply_code: 404, reply_text: pool.bytes("NOT_FOUND - no queue 'q'"), class_id: 50, method_id: 10)
        var declareOk = amqp_queue_declare_ok_t(queue: pool.bytes("amq.gen-1"), message_count: 3, consumer_count: 2)
        var ack = amqp_basic_nack_t(delivery_tag: 42, multiple: 1, requeue: 0)
        let decodedClose = withUnsafeMutableBytes(of: &close) {
            InboundMethod(cMethod: amqp_method_t(id: AMQP_CHANNEL_CLOSE_METHOD, decoded: $0.baseAddress))
        }
        #expect(decodedClose == .channelClose(ServerClose(replyCode: 404, replyText: "NOT_FOUND - no queue 'q'", classID: 50, methodID: 10)))
        let decodedDeclare = withUnsafeMutableBytes(of: &declareOk) {
            InboundMethod(cMethod: amqp_method_t(id: AMQP_QUEUE_DECLARE_OK_METHOD, decoded: $0.baseAddress))
        }
        #expect(decodedDeclare == .queueDeclareOk(.init(name: "amq.gen-1", messageCount: 3, consumerCount: 2)))
        let decodedNack = withUnsafeMutableBytes(of: &ack) { InboundMethod(cMethod: amqp_method_t(id: AMQP_BASIC_NACK_METHOD, decoded: $0.baseAddress)) }
        #expect(decodedNack == .basicNack(deliveryTag: 42, multiple: true))
        #expect(InboundMethod(cMethod: amqp_method_t(id: AMQP_BASIC_RECOVER_OK_METHOD, decoded: nil)) == .unexpected(AMQP_BASIC_RECOVER_OK_METHOD))
    }

    // MARK: Frame writer

    /// A connected, non-blocking socket pair with small buffers.
    static func socketPair() -> (Int32, Int32) {
        var descriptors: [Int32] = [0, 0]
        _ = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &descriptors)
        var small: Int32 = 4096
        for descriptor in descriptors {
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
            setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        }
        return (descriptors[0], descriptors[1])
    }

    static func drain(_ descriptor: Int32) -> [UInt8] {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return all }
            all += chunk[..<count]
        }
    }

    /// Defect: the writer polled without a limit when the socket was full, freezing the loop.
    @Test func theWriterNeverWaitsAndCountsOnlyPublishesWrittenWhole() {
        let (ours, peer) = Self.socketPair()
        defer {
            close(ours)
            close(peer)
        }
        let writer = FrameWriter(socket: ours, frameMax: 4096)
        let scratch = ScratchPool()
        let big = OutboundMessage(
            body: [UInt8](repeating: 0xAB, count: 200_000), exchange: "", routingKey: "q", properties: RabbitMQProperties(messageID: "big"),
            mandatory: false)
        #expect(writer.appendPublish(channel: 1, message: message("small"), returnTag: nil, holdsRoom: true, scratch: scratch) == AMQP_STATUS_OK.rawValue)
        #expect(writer.appendPublish(channel: 1, message: big, returnTag: nil, holdsRoom: true, scratch: scratch) == AMQP_STATUS_OK.rawValue)
        writer.appendHeartbeat()
        var written = 0
        guard case .wouldBlock = writer.write(publishes: &written) else {
            Issue.record("200 KB fitted in a 4 KB socket?")
            return
        }
        #expect(written <= 1, "the big one is not written whole yet")
        var received: [UInt8] = []
        var rounds = 0
        while true {
            received += Self.drain(peer)
            rounds += 1
            if case .done = writer.write(publishes: &written) { break }
            #expect(rounds < 10_000)
        }
        received += Self.drain(peer)
        #expect(written == 2)
        #expect(writer.isEmpty && writer.backlog == 0)
        // The bytes are AMQP frames: method, header, body... and the heartbeat last.
        #expect(received.first == UInt8(AMQP_FRAME_METHOD))
        #expect(received.suffix(8) == [UInt8(AMQP_FRAME_HEARTBEAT), 0, 0, 0, 0, 0, 0, UInt8(AMQP_FRAME_END)])
        let bodyBytes = received.filter { $0 == 0xAB }.count
        #expect(bodyBytes >= 200_000)
    }

    @Test func methodFramesFromTheWriterAreWhatRabbitMQCWouldSend() {
        let (ours, peer) = Self.socketPair()
        defer {
            close(ours)
            close(peer)
        }
        let writer = FrameWriter(socket: ours, frameMax: 4096)
        let scratch = ScratchPool()
        let status = scratch.withCMethod(.basicAck(deliveryTag: 5, multiple: true)) { id, decoded in
            writer.appendMethod(channel: 3, id: id, decoded: decoded)
        }
        #expect(status == AMQP_STATUS_OK.rawValue)
        var written = 0
        guard case .done = writer.write(publishes: &written) else {
            Issue.record("not written")
            return
        }
        let frame = Self.drain(peer)
        // type 1, channel 3, size 13, class 60 method 80, tag 5, multiple, frame end.
        #expect(frame == [1, 0, 3, 0, 0, 0, 13, 0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0xCE])
    }

    @Test func aPublishWhoseHeaderCannotFitAFrameIsTakenBackAlone() {
        let (ours, peer) = Self.socketPair()
        defer {
            close(ours)
            close(peer)
        }
        let writer = FrameWriter(socket: ours, frameMax: 4096)
        let scratch = ScratchPool()
        let huge = RabbitMQProperties(headers: ["blob": .bytes([UInt8](repeating: 1, count: 5000))])
        #expect(writer.appendPublish(channel: 1, message: message("before"), returnTag: nil, holdsRoom: true, scratch: scratch) == AMQP_STATUS_OK.rawValue)
        let before = writer.backlog
        let refused = writer.appendPublish(
            channel: 1, message: OutboundMessage(body: [], exchange: "", routingKey: "q", properties: huge, mandatory: false),
            returnTag: nil, holdsRoom: true, scratch: scratch)
        #expect(refused == AMQP_STATUS_TABLE_TOO_BIG.rawValue)
        #expect(writer.backlog == before)
        var written = 0
        _ = writer.write(publishes: &written)
        #expect(written == 1)
    }

    // MARK: Watchdog

    /// Defect: the watchdog could shut down a descriptor it no longer owned (checked and shut
    /// it down outside the lock that unregistering closes it under).
    @Test func theWatchdogNeverShutsDownADescriptorUnregisteredMeanwhile() {
        let shutDown = LockedValue<[Int32]>([])
        let registration = LockedValue<Watchdog.Registration?>(nil)
        let watchdogBox = LockedValue<Watchdog?>(nil)
        let silenceAsked = LockedValue(false)
        let watchdog = Watchdog(
            silence: { _ in
                silenceAsked.withLock { $0 = true }
                // The connection is destroyed right now, on its I/O thread: its dup is closed,
                // and the number may be reused by anyone.
                if let registration = registration.withLock({ $0 }), let watchdog = watchdogBox.withLock({ $0 }) {
                    watchdog.unregister(registration)
                }
                return 1_000_000
            },
            shutDown: { descriptor in shutDown.withLock { $0.append(descriptor) } },
            startsThread: false)
        watchdogBox.withLock { $0 = watchdog }
        let (socket, peer) = Self.socketPair()
        defer {
            close(socket)
            close(peer)
        }
        let registered = watchdog.register(socket: socket, heartbeatSeconds: 1)!
        registration.withLock { $0 = registered }
        registered.calls.wrappingAdd(1, ordering: .relaxed)  // inside a send, and stuck there
        let start = ContinuousClock.now
        // Seen inside a send, still in it 1 s later, and 5 s later: past 2 x heartbeat + 1 s.
        watchdog.check(now: start)
        watchdog.check(now: start + .seconds(1))
        watchdog.check(now: start + .seconds(5))
        #expect(silenceAsked.withLock { $0 }, "the watchdog found the send stuck")
        #expect(shutDown.withLock { $0 }.isEmpty, "shut down \(shutDown.withLock { $0 }) after it was unregistered")
        watchdogBox.withLock { $0 = nil }
    }

    @Test func theWatchdogShutsDownAStuckSendToASilentPeer() {
        let shutDown = LockedValue<[Int32]>([])
        let watchdog = Watchdog(silence: { _ in 1_000_000 }, shutDown: { fd in shutDown.withLock { $0.append(fd) } }, startsThread: false)
        let (socket, peer) = Self.socketPair()
        defer {
            close(socket)
            close(peer)
        }
        let registered = watchdog.register(socket: socket, heartbeatSeconds: 1)!
        registered.calls.wrappingAdd(1, ordering: .relaxed)
        let start = ContinuousClock.now
        watchdog.check(now: start)
        watchdog.check(now: start + .seconds(1))
        watchdog.check(now: start + .seconds(3))
        #expect(shutDown.withLock { $0 }.isEmpty, "not stuck for long enough yet (2 x heartbeat + 1 s)")
        watchdog.check(now: start + .milliseconds(4500))
        #expect(shutDown.withLock { $0 } == [registered.descriptor])
        watchdog.unregister(registered)
    }

    // MARK: Field tables

    @Test func aTableNestedTooDeepIsRefusedOnTheWayInWithoutRecursingFurther() throws {
        let pool = ScratchPool()
        var table: RabbitMQFieldTable = ["leaf": .int32(1)]
        for _ in 0..<RabbitMQFieldTable.maxDepth { table = ["t": .table(table)] }
        #expect(table.measured().depth == RabbitMQFieldTable.maxDepth + 1)
        let c = pool.table(table)
        #expect(throws: FieldTableTooDeep.self) { try RabbitMQFieldTable(cTable: c) }
        var fits: RabbitMQFieldTable = ["leaf": .array([.int32(1)])]
        for _ in 0..<(RabbitMQFieldTable.maxDepth - 2) { fits = ["t": .table(fits)] }
        #expect(fits.measured().depth == RabbitMQFieldTable.maxDepth)
        #expect(try RabbitMQFieldTable(cTable: pool.table(fits)) == fits)
    }

    @Test func measuringADeepTableStopsAtTheLimit() {
        var table: RabbitMQFieldTable = [:]
        for _ in 0..<10_000 { table = ["t": .table(table)] }
        #expect(table.measured().depth == RabbitMQFieldTable.maxDepth + 1, "the walk stopped at the limit")
        let request = ChannelRequest.queueDeclare(name: "q", passive: false, durable: false, exclusive: false, autoDelete: false, arguments: table)
        #expect(throws: RabbitMQError.self) { try request.check(frameMax: 131_072) }
    }

    // MARK: Frames from a hostile broker

    /// `bytes` read by rabbitmq-c's frame reader (as `amqp_simple_wait_frame` does); `body`
    /// sees each frame it accepts, in its pool.
    static func readFrames(_ bytes: [UInt8], _ body: (amqp_frame_t) -> Void) {
        let state = amqp_new_connection()!
        defer { amqp_destroy_connection(state) }
        bytes.withUnsafeBytes { raw in
            var remaining = raw
            while !remaining.isEmpty {
                var frame = amqp_frame_t()
                let consumed = amqp_handle_input(
                    state, amqp_bytes_t(len: remaining.count, bytes: UnsafeMutableRawPointer(mutating: remaining.baseAddress)), &frame)
                guard consumed > 0 else { return }
                remaining = UnsafeRawBufferPointer(rebasing: remaining[Int(consumed)...])
                if frame.frame_type != 0 { body(frame) }
            }
        }
    }

    /// Defect (found by scripts/fuzz.sh): rabbitmq-c decodes a content header of another
    /// class than basic into that class's 8-byte structure; read as basic properties, its
    /// flags sent the conversion after pointers past it, and the client crashed.
    @Test func aContentHeaderOfAnotherClassIsRefusedNotReadAsBasicProperties() {
        // Channel 1, class 10 (connection), no body, the content-type flag and its string.
        let payload: [UInt8] = [0, 10, 0, 0] + [UInt8](repeating: 0, count: 8) + [0x80, 0x00, 10] + Array("text/plain".utf8)
        let frame: [UInt8] = [2, 0, 1] + [0, 0, 0, UInt8(payload.count)] + payload + [0xCE]
        var outcomes: [Result<RabbitMQProperties?, ContentHeaderError>] = []
        Self.readFrames(frame) { frame in
            let header = frame.payload.properties
            var cached = RabbitMQProperties()
            var flags: amqp_flags_t = 0
            outcomes.append(Result { () throws(ContentHeaderError) in
                try RabbitMQProperties.contentHeader(classID: header.class_id, decoded: header.decoded, cached: &cached, flags: &flags)
            })
        }
        #expect(outcomes.count == 1)
        guard case .failure(.notBasic(classID: 10)) = outcomes.first else {
            Issue.record("got \(outcomes)")
            return
        }
    }

    /// A broker may propose any frame_max in its tune, and rabbitmq-c before 0.16 takes it;
    /// below AMQP's 4096 the frame writer's arithmetic (two body frames at most per copied
    /// body, a method in frame_max - 12 bytes) no longer holds: the connection is refused.
    @Test func aFrameMaxBelowAMQPsMinimumIsRefused() {
        for frameMax in [0, 1, 12, 100, 4095] {
            #expect(throws: RabbitMQError.self, "\(frameMax)") {
                try ConnectionCore.Negotiated.checkFrameMax(frameMax, endpoint: "broker")
            }
            do {
                try ConnectionCore.Negotiated.checkFrameMax(frameMax, endpoint: "broker")
            } catch {
                #expect(error.code == .protocolError && error.message.contains("frame_max of \(frameMax)"))
            }
        }
        for frameMax in [4096, 8192, 131_072, Int(Int32.max)] {
            #expect(throws: Never.self) { try ConnectionCore.Negotiated.checkFrameMax(frameMax, endpoint: "broker") }
        }
    }

    /// rabbitmq-c keeps a pool for every channel number it reads a frame on, until the
    /// connection closes: a frame above the negotiated channel_max is refused (the number of
    /// pools is then bounded by what we agreed to), one at or below it is not.
    @Test func aFrameAboveTheNegotiatedChannelMaxIsRefused() {
        var negotiated = ConnectionCore.Negotiated()
        negotiated.channelMax = 256
        for channel: UInt16 in [0, 1, 256] {
            #expect(throws: Never.self, "\(channel)") { try negotiated.checkFrameChannel(channel) }
        }
        for channel: UInt16 in [257, 65_535] {
            #expect(throws: RabbitMQError.self, "\(channel)") { try negotiated.checkFrameChannel(channel) }
        }
        // What 65,535 such frames, one per channel, leave rabbitmq-c holding: a pool each.
        let state = amqp_new_connection()!
        defer { amqp_destroy_connection(state) }
        var frame = amqp_frame_t()
        let bytes: [UInt8] = [3, 0xFF, 0xFF, 0, 0, 0, 1, 0x78, 0xCE]
        let consumed = bytes.withUnsafeBytes { raw in
            amqp_handle_input(state, amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress)), &frame)
        }
        #expect(consumed > 0 && frame.channel == 65_535, "rabbitmq-c reads a frame on any channel")
    }

    /// rabbitmq-c before 0.14 decodes nested tables and arrays by recursion without a limit,
    /// before our depth check sees them: the deepest table a frame of the default frame_max
    /// can carry (some 26,000 nested arrays) must decode on the I/O thread's stack, then be
    /// refused as too deep. (0.11 overflows a 2 MiB stack on it.)
    @Test func theDeepestTableAFrameCanCarryDecodesOnTheIOThreadsStack() throws {
        let frameMax = 131_072
        // { "a": A[A[A[...]]] }: 4 + 2 bytes, then 5 a level, in a method frame's room.
        let levels = (frameMax - 8 - 4 - 6) / 5
        var bytes: [UInt8] = []
        bytes.reserveCapacity(6 + 5 * levels)
        func u32(_ value: Int) { bytes += withUnsafeBytes(of: UInt32(value).bigEndian, Array.init) }
        u32(2 + 5 * levels)
        bytes += [1, UInt8(ascii: "a")]
        for level in 0..<levels {
            bytes.append(UInt8(ascii: "A"))
            u32(5 * (levels - 1 - level))
        }
        final class Run: @unchecked Sendable {
            // Written by the thread before it ends, read after pthread_join: no overlap.
            let bytes: [UInt8]
            var status: Int32 = 1
            var tooDeep = false
            init(_ bytes: [UInt8]) { self.bytes = bytes }
        }
        let run = Run(bytes)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, IOLoop.stackSize(frameMax: frameMax))
        var thread = pthread_t()
        let created = pthread_create(&thread, &attributes, { argument in
            let run = Unmanaged<Run>.fromOpaque(argument!).takeUnretainedValue()
            let pool = ScratchPool()
            var table = amqp_table_t()
            var offset = 0
            run.status = run.bytes.withUnsafeBytes { raw in
                amqp_decode_table(
                    amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress)), pool.pool, &table, &offset)
            }
            if run.status == AMQP_STATUS_OK.rawValue {
                do { _ = try RabbitMQFieldTable(cTable: table) } catch { run.tooDeep = true }
            }
            return nil
        }, Unmanaged.passUnretained(run).toOpaque())
        try #require(created == 0)
        pthread_join(thread, nil)
        if amqp_version_number() >= 0x000E_0000 {
            // rabbitmq-c 0.14 and later bound the nesting themselves and refuse the table.
            #expect(run.status == AMQP_STATUS_BAD_AMQP_DATA.rawValue)
        } else {
            #expect(run.status == AMQP_STATUS_OK.rawValue)
            #expect(run.tooDeep)
        }
        #expect(IOLoop.stackSize(frameMax: frameMax) >= 8 << 20)
    }
}
