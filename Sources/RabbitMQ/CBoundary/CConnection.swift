import CRabbitMQ
import Glibc

/// What kind of frame ``CConnection/nextFrame()`` read; its parts are read with the
/// connection's accessors until the next read (no payload travels in an enum: a message's
/// frames stay on the hot path).
enum FrameType {
    case method
    /// basic.deliver, basic.return, basic.get-ok: the method that content frames follow.
    case deliver, returned, getOk
    case header
    case body
}

/// The one owner of a rabbitmq-c connection (`amqp_connection_state_t`) and its socket: it
/// connects (TCP or TLS), logs in, reads frames, sends methods, publishes and heartbeats,
/// and destroys. Every rabbitmq-c call of a connection goes through here, on the I/O thread.
///
/// After login everything is sent through a ``FrameWriter`` that never blocks: with `sendmsg`
/// on plain TCP, with `SSL_write` on the connection's own SSL object on TLS. rabbitmq-c still
/// reads TLS frames through OpenSSL, which may have to write (a key update) and can then block
/// in 0.11, so TLS reads run under the ``Watchdog``.
final class CConnection {
    private let state: amqp_connection_state_t
    let endpoint: RabbitMQConfiguration.Endpoint
    let socketDescriptor: Int32
    let negotiated: ConnectionCore.Negotiated
    private let scratch: ScratchPool
    private let writer: FrameWriter?
    private let watch: Watchdog.Registration?
    /// The negotiated channel_max: a frame on a channel above it is a protocol error.
    private let channelLimit: Int
    /// What the TLS callbacks record (see the shim); freed after the socket is.
    private let tls: UnsafeMutablePointer<crmq_tls_state>?
    /// The channel of the frame read last, whose pool is released before the next read (its
    /// body must stay valid until the loop has copied it).
    @exclusivity(unchecked) private var unreleasedChannel: UInt16?
    /// The frame read last (its pointers into rabbitmq-c's pool are valid until the next read).
    @exclusivity(unchecked) private var frame = amqp_frame_t()
    @exclusivity(unchecked) private var caches: [UInt16: DecodeCache] = [:]
    /// The cache of the last channel looked up (0: none; channel 0 never carries content).
    @exclusivity(unchecked) private var lastCacheChannel: UInt16 = 0
    @exclusivity(unchecked) private var lastCacheObject = DecodeCache()
    private var destroyed = false
    /// Publishes written by rabbitmq-c itself (TLS) since the last flush.
    @exclusivity(unchecked) private var writtenDirectly = 0

    /// The strings and properties of the last delivery on a channel, reused while the next
    /// ones carry the same bytes: no String is made per delivery for the tag, exchange and
    /// routing key, and repeated properties share one box.
    private final class DecodeCache {
        @exclusivity(unchecked) var tag = ""
        @exclusivity(unchecked) var exchange = ""
        @exclusivity(unchecked) var routingKey = ""
        @exclusivity(unchecked) var properties = RabbitMQProperties()
        @exclusivity(unchecked) var propertiesFlags: amqp_flags_t = 0
    }

    private init(
        state: amqp_connection_state_t, endpoint: RabbitMQConfiguration.Endpoint, negotiated: ConnectionCore.Negotiated,
        scratch: ScratchPool, tls: UnsafeMutablePointer<crmq_tls_state>?
    ) {
        self.state = state
        self.endpoint = endpoint
        self.negotiated = negotiated
        self.scratch = scratch
        self.tls = tls
        channelLimit = negotiated.channelMax
        let socketDescriptor = amqp_get_sockfd(state)
        self.socketDescriptor = socketDescriptor
        if let tls {
            // The SSL object the handshake ran on (seen by the shim's info callback). Without
            // it (never seen so far) rabbitmq-c writes, under the watchdog like the reads.
            writer = tls.pointee.ssl.map { FrameWriter(socket: socketDescriptor, frameMax: negotiated.frameMax, ssl: $0) }
            watch = Watchdog.shared.register(socket: socketDescriptor, heartbeatSeconds: Int(negotiated.heartbeat))
        } else {
            writer = FrameWriter(socket: socketDescriptor, frameMax: negotiated.frameMax)
            watch = nil
        }
    }

    deinit {
        destroy()
    }

    // MARK: Connect

    /// Opens a socket to `endpoint` (TCP, or TLS with the configured verification) and logs
    /// in (PLAIN), bounded by the connect and handshake timeouts. Afterwards rabbitmq-c's own
    /// heartbeat timer is off: the I/O loop sends and checks heartbeats itself.
    static func open(
        _ endpoint: RabbitMQConfiguration.Endpoint, configuration: RabbitMQConfiguration,
        clientProperties: RabbitMQFieldTable, scratch: ScratchPool
    ) throws(RabbitMQError) -> CConnection {
        guard let state = amqp_new_connection() else {
            throw RabbitMQError(code: .library, message: "amqp_new_connection failed")
        }
        let tls: UnsafeMutablePointer<crmq_tls_state>?
        if endpoint.useTLS {
            tls = .allocate(capacity: 1)
            tls!.initialize(to: crmq_tls_state())
        } else {
            tls = nil
        }
        do {
            let negotiated = try connect(
                state, endpoint, configuration: configuration, clientProperties: clientProperties, scratch: scratch, tls: tls)
            return CConnection(state: state, endpoint: endpoint, negotiated: negotiated, scratch: scratch, tls: tls)
        } catch {
            amqp_destroy_connection(state)
            tls?.deallocate()
            throw error
        }
    }

    private static func connect(
        _ state: amqp_connection_state_t, _ endpoint: RabbitMQConfiguration.Endpoint, configuration: RabbitMQConfiguration,
        clientProperties: RabbitMQFieldTable, scratch: ScratchPool, tls: UnsafeMutablePointer<crmq_tls_state>?
    ) throws(RabbitMQError) -> ConnectionCore.Negotiated {
        let socket: OpaquePointer?
        if let tls {
            socket = amqp_ssl_socket_new(state)
            if let socket { try configureTLS(socket, configuration.tls, host: endpoint.host, state: tls) }
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else { throw RabbitMQError(code: .library, message: "could not create a socket") }

        var connectTimeout = timeval(configuration.connectTimeout)
        let openStatus = amqp_socket_open_noblock(socket, endpoint.host, Int32(endpoint.port), &connectTimeout)
        guard openStatus == AMQP_STATUS_OK.rawValue else {
            var error = RabbitMQError.library(openStatus, "could not connect to \(endpoint)")
            if error.code != .tls { error.code = .connectFailed }
            if let tls, openStatus == AMQP_STATUS_SSL_PEER_VERIFY_FAILED.rawValue {
                error.message = verificationFailure(tls.pointee, endpoint: endpoint, configuration.tls)
            }
            throw error
        }
        if let tls, configuration.tls.verifyHostname, tls.pointee.name_mismatch != 0 {
            // Without peer verification rabbitmq-c ignores the result: the name check is ours.
            throw RabbitMQError(
                code: .tls, scope: .connection, message: verificationFailure(tls.pointee, endpoint: endpoint, configuration.tls))
        }

        var handshakeTimeout = timeval(configuration.handshakeTimeout)
        amqp_set_handshake_timeout(state, &handshakeTimeout)
        var properties = scratch.table(clientProperties)
        let heartbeatSeconds = Int32(configuration.heartbeat.components.seconds)
        let reply: amqp_rpc_reply_t
        switch configuration.authenticationMechanism {
        case .plain:
            reply = crmq_login_plain(
                state, configuration.virtualHost, Int32(configuration.channelMax), Int32(configuration.frameMax),
                heartbeatSeconds, &properties, configuration.username, configuration.password)
        case .external:
            // The broker takes the identity from the client certificate and ignores the SASL
            // response. rabbitmq-c cannot send an empty one (it copies it with malloc(0) and
            // takes the null for a failed allocation), so the user name goes as the
            // authorization identity.
            let identity = configuration.username.isEmpty ? "-" : configuration.username
            reply = crmq_login_external(
                state, configuration.virtualHost, Int32(configuration.channelMax), Int32(configuration.frameMax),
                heartbeatSeconds, &properties, identity)
        }
        // Emptied, not recycled: the client properties' page would stay resident for the
        // life of a connection that may never send a method again (11 KiB per idle
        // connection, measured with `rabbitmq-bench idle`); the first send takes a new one.
        scratch.empty()
        try checkLogin(reply, endpoint: endpoint, configuration: configuration)

        var negotiated = ConnectionCore.Negotiated()
        negotiated.channelMax = Int(amqp_get_channel_max(state))
        negotiated.frameMax = Int(amqp_get_frame_max(state))
        try ConnectionCore.Negotiated.checkFrameMax(negotiated.frameMax, endpoint: "\(endpoint)")
        negotiated.heartbeat = Int(amqp_get_heartbeat(state))
        if let server = amqp_get_server_properties(state) {
            negotiated.serverProperties = (try? RabbitMQFieldTable(cTable: server.pointee)) ?? [:]
        }
        negotiated.endpoint = endpoint
        // A backstop only: no blocking RPC helper of rabbitmq-c is used after login.
        var requestTimeout = timeval(configuration.requestTimeout)
        amqp_set_rpc_timeout(state, &requestTimeout)
        // rabbitmq-c's outbound buffer only served the login (the frame writer sends the
        // rest), but the login's tune grew it from 64 KiB to frame_max with `realloc`, which
        // copied all 64 KiB into new pages: resident for the connection's life, for a few
        // hundred bytes of login frames (58 KiB per idle connection, measured with
        // `rabbitmq-bench idle`). Shrinking it to AMQP's smallest frame first gives those
        // pages back when glibc served it with mmap (`mremap`; in a fresh process, until it
        // has freed a block of 128 KiB or more and raised its threshold: an arena chunk is
        // only split, its pages stay); the tune below grows it again without touching them
        // and sets frame_max, which bounds incoming frames, back.
        _ = amqp_tune_connection(state, Int32(negotiated.channelMax), 4096, 0)
        // Heartbeats are ours from now on: rabbitmq-c must never send one by itself, in the
        // middle of a frame the writer holds, or block in that send.
        let tuned = amqp_tune_connection(state, Int32(negotiated.channelMax), Int32(negotiated.frameMax), 0)
        guard tuned == AMQP_STATUS_OK.rawValue else { throw .library(tuned, "could not take over heartbeats") }
        return negotiated
    }

    private static func configureTLS(
        _ socket: OpaquePointer, _ tls: RabbitMQConfiguration.TLS, host: String, state: UnsafeMutablePointer<crmq_tls_state>
    ) throws(RabbitMQError) {
        _ = amqp_ssl_socket_set_ssl_versions(socket, AMQP_TLSv1_2, AMQP_TLSvLATEST)
        amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
        // The name check is OpenSSL's (set up by the shim), which knows IP addresses too.
        amqp_ssl_socket_set_verify_hostname(socket, 0)
        let expectedName = tls.verifyHostname ? (tls.serverName ?? host) : nil
        guard crmq_tls_prepare(socket, state, expectedName) == 0 else {
            throw RabbitMQError(code: .tls, message: "could not set up TLS verification for '\(expectedName ?? host)'")
        }
        if let ca = tls.caCertificatePath {
            let status = amqp_ssl_socket_set_cacert(socket, ca)
            guard status == AMQP_STATUS_OK.rawValue else {
                throw RabbitMQError(code: .tls, message: "could not load CA certificates from \(ca)", libraryStatus: status)
            }
        }
        if let certificate = tls.certificatePath, let key = tls.keyPath {
            let status = amqp_ssl_socket_set_key(socket, certificate, key)
            guard status == AMQP_STATUS_OK.rawValue else {
                // Paths only: never anything read from the files.
                throw RabbitMQError(
                    code: .tls, message: "could not load the client certificate \(certificate) with the key \(key)",
                    libraryStatus: status)
            }
        }
    }

    /// Why the broker's certificate was refused, in OpenSSL's words.
    private static func verificationFailure(
        _ state: crmq_tls_state, endpoint: RabbitMQConfiguration.Endpoint, _ tls: RabbitMQConfiguration.TLS
    ) -> String {
        if state.name_mismatch != 0 {
            let name = tls.serverName ?? endpoint.host
            return "TLS verification of \(endpoint) failed: the broker's certificate does not name '\(name)'"
        }
        let reason = state.first_error == 0 ? "no certificate" : String(cString: crmq_tls_verify_error_string(state.first_error))
        return "TLS verification of \(endpoint) failed: the broker's certificate was refused (\(reason))"
    }

    private static func checkLogin(
        _ reply: amqp_rpc_reply_t, endpoint: RabbitMQConfiguration.Endpoint, configuration: RabbitMQConfiguration
    ) throws(RabbitMQError) {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD, reply.reply.decoded != nil {
                guard case .connectionClose(let close) = InboundMethod(cMethod: reply.reply) else { break }
                var error = close.error(scope: .connection)
                if close.replyCode == 403 {
                    error.code = .authenticationFailed
                    switch configuration.authenticationMechanism {
                    case .plain:
                        error.message = "login refused by \(endpoint) for user '\(configuration.username)': \(close.replyText)"
                    case .external:
                        error.message = "login by client certificate (EXTERNAL) refused by \(endpoint): \(close.replyText)"
                    }
                }
                throw error
            }
            throw RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected reply during login")
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            var error = RabbitMQError.library(reply.library_error, "login to \(endpoint) failed")
            if reply.library_error == AMQP_STATUS_BROKER_UNSUPPORTED_SASL_METHOD.rawValue,
                configuration.authenticationMechanism == .external
            {
                error.message += " (EXTERNAL needs the broker's rabbitmq_auth_mechanism_ssl plugin and EXTERNAL in its auth_mechanisms)"
            }
            throw error
        default:
            break
        }
        throw RabbitMQError(code: .protocolError, scope: .connection, message: "login to \(endpoint) failed")
    }

    /// Closes the socket and frees rabbitmq-c's state (sends nothing). Idempotent.
    func destroy() {
        guard !destroyed else { return }
        destroyed = true
        _ = writer?.discard()
        if let watch { Watchdog.shared.unregister(watch) }
        amqp_destroy_connection(state)
        tls?.deallocate()
    }

    // MARK: Reading

    /// rabbitmq-c holds frames or bytes already read: read again before sleeping in poll().
    var hasBufferedInput: Bool { amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0 }

    /// Whether the socket may have bytes nobody has read yet: true until a read found none,
    /// then false until `poll()` reports the socket readable (``IOLoop``). A turn that starts
    /// with it false skips the read, which costs two system calls when there is nothing
    /// (rabbitmq-c's `recv`, then its zero-timeout `poll`): a round trip's wake-up by a
    /// command, and the turn after a command was written, read nothing.
    @exclusivity(unchecked) var mayHaveInput = true

    /// Over plain TCP, bytes rabbitmq-c has not buffered are still in the socket, where
    /// `poll()` sees them. Over TLS, OpenSSL may hold records it read already, which `poll()`
    /// does not see: a drain goes on until a read finds nothing.
    var pollSeesAllInput: Bool { tls == nil }

    /// Reads the next frame the socket has (never waits); nil when there is none now.
    /// Heartbeat frames are taken by rabbitmq-c and never returned.
    @inline(__always)
    func nextFrame() throws(RabbitMQError) -> FrameType? {
        // Release the previous frame's pool right after the loop copied it: releasing once per
        // turn is skipped whenever a drain stops mid-frame, and memory then grows without bound.
        if let channel = unreleasedChannel {
            amqp_maybe_release_buffers_on_channel(state, channel)
            unreleasedChannel = nil
        }
        var zero = timeval(tv_sec: 0, tv_usec: 0)
        let status = guarded { amqp_simple_wait_frame_noblock(state, &frame, &zero) }
        if status == AMQP_STATUS_TIMEOUT.rawValue { return nil }
        guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "reading from the broker failed") }
        unreleasedChannel = frame.channel
        // Compared with a copy of the limit: reading it through `negotiated` (a struct with
        // a table and strings) copied and released the struct per frame (callgrind: 5% of a
        // consumed message's instructions).
        if _slowPath(Int(frame.channel) > channelLimit) { try negotiated.checkFrameChannel(frame.channel) }
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            switch frame.payload.method.id {
            case AMQP_BASIC_DELIVER_METHOD: return .deliver
            case AMQP_BASIC_RETURN_METHOD: return .returned
            case AMQP_BASIC_GET_OK_METHOD: return .getOk
            default: return .method
            }
        case AMQP_FRAME_HEADER: return .header
        default: return .body
        }
    }

    /// The channel of the frame read last.
    var frameChannel: UInt16 { frame.channel }

    /// The method of the frame read last (``FrameType/method``).
    func method() -> InboundMethod { InboundMethod(cMethod: frame.payload.method) }

    /// The basic.deliver read last, as a delivery whose content is still to come.
    @inline(__always)
    func delivery(epoch: UInt64) -> RabbitMQDelivery {
        let deliver = frame.payload.method.decoded!.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
        let cache = cache(for: frame.channel)
        return RabbitMQDelivery(
            body: [], properties: RabbitMQProperties(), exchange: .reusing(&cache.exchange, for: deliver.exchange),
            routingKey: .reusing(&cache.routingKey, for: deliver.routing_key), redelivered: deliver.redelivered != 0,
            deliveryTag: deliver.delivery_tag, consumerTag: .reusing(&cache.tag, for: deliver.consumer_tag),
            messageCount: nil, channel: nil, epoch: epoch)
    }

    /// The basic.return read last: its reply code and text, and the message to come.
    func returned(epoch: UInt64) -> (replyCode: UInt16, replyText: String, message: RabbitMQDelivery) {
        let returned = frame.payload.method.decoded!.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
        return (
            returned.reply_code, String(amqpBytes: returned.reply_text),
            RabbitMQDelivery(
                body: [], properties: RabbitMQProperties(), exchange: String(amqpBytes: returned.exchange),
                routingKey: String(amqpBytes: returned.routing_key), redelivered: false, deliveryTag: 0, consumerTag: "",
                messageCount: nil, channel: nil, epoch: epoch)
        )
    }

    /// The basic.get-ok read last, as a delivery whose content is still to come.
    func getOk(epoch: UInt64) -> RabbitMQDelivery {
        let getOk = frame.payload.method.decoded!.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
        return RabbitMQDelivery(
            body: [], properties: RabbitMQProperties(), exchange: String(amqpBytes: getOk.exchange),
            routingKey: String(amqpBytes: getOk.routing_key), redelivered: getOk.redelivered != 0,
            deliveryTag: getOk.delivery_tag, consumerTag: "", messageCount: getOk.message_count, channel: nil, epoch: epoch)
    }

    /// The body size the content header read last announces.
    var bodySize: UInt64 { frame.payload.properties.body_size }

    /// The properties of the content header read last: nil when it has none; `undecodable`
    /// when they could not be decoded (a field table nested too deep). A header that is not
    /// of the basic class sets `refusal` (a protocol error): nothing is thrown on the delivery
    /// path (the throwing form cost the consume path a few percent of its instructions).
    @inline(__always)
    func properties(undecodable: inout Bool, refusal: inout RabbitMQError?) -> RabbitMQProperties? {
        let header = frame.payload.properties
        var problem: ContentHeaderError?
        let cache = cache(for: frame.channel)
        let properties = RabbitMQProperties.contentHeader(
            classID: header.class_id, decoded: header.decoded, cached: &cache.properties, flags: &cache.propertiesFlags,
            problem: &problem)
        switch problem {
        case nil: break
        case .tooDeep: undecodable = true
        case .notBasic(let classID): refusal = Self.notBasic(classID, channel: frame.channel)
        }
        return properties
    }

    @inline(never)
    private static func notBasic(_ classID: UInt16, channel: UInt16) -> RabbitMQError {
        RabbitMQError(
            code: .protocolError, scope: .connection,
            message: "the broker sent a content header of class \(classID) on channel \(channel); only basic (60) has content")
    }

    /// The body fragment read last (valid until the next read).
    var body: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: frame.payload.body_fragment.bytes, count: frame.payload.body_fragment.len)
    }

    @inline(__always)
    private func cache(for channel: UInt16) -> DecodeCache {
        if lastCacheChannel == channel { return lastCacheObject }
        let cache: DecodeCache
        if let existing = caches[channel] {
            cache = existing
        } else {
            cache = DecodeCache()
            caches[channel] = cache
        }
        lastCacheChannel = channel
        lastCacheObject = cache
        return cache
    }

    /// Forgets what was cached for a closed channel (its number may be reused).
    func channelClosed(_ channel: UInt16) {
        caches[channel] = nil
        if lastCacheChannel == channel { lastCacheChannel = 0 }
    }

    // MARK: Writing

    /// Buffers a method; ``flush(publishes:)`` writes it.
    func send(_ method: OutboundMethod, channel: UInt16) throws(RabbitMQError) {
        if case .connectionUpdateSecret(let secret, let reason) = method {
            // Only sent when there is a writer (see `canUpdateSecret`).
            writer?.appendUpdateSecret(secret: secret, reason: reason)
            return
        }
        let status: Int32 = scratch.withCMethod(method) { id, decoded in
            if let writer { return writer.appendMethod(channel: channel, id: id, decoded: decoded) }
            return guarded { amqp_send_method(state, channel, id, decoded) }
        }
        guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "sending to the broker failed") }
    }

    func sendHeartbeat() throws(RabbitMQError) {
        if let writer {
            writer.appendHeartbeat()
            return
        }
        var frame = amqp_frame_t()
        frame.frame_type = UInt8(AMQP_FRAME_HEARTBEAT)
        frame.channel = 0
        let status = guarded { amqp_send_frame(state, &frame) }
        guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "sending a heartbeat failed") }
    }

    enum PublishResult {
        /// Buffered (or written by rabbitmq-c, on a TLS connection without a writer).
        case sent
        /// Its content header cannot fit in a frame: not published.
        case tooLarge
    }

    /// Publishes one message; `returnTag` is added as a header (see ``Unconfirmed/returnTagHeader``).
    /// `holdsRoom`: ``flush(publishes:)`` counts it once it is written.
    @inline(__always)
    func publish(channel: UInt16, _ message: OutboundMessage, returnTag: UInt64?, holdsRoom: Bool) throws(RabbitMQError) -> PublishResult {
        let status: Int32
        if let writer {
            status = writer.appendPublish(channel: channel, message: message, returnTag: returnTag, holdsRoom: holdsRoom, scratch: scratch)
        } else {
            if holdsRoom { writtenDirectly += 1 }
            var properties = scratch.properties(message.properties, returnTag: returnTag)
            let exchange = scratch.bytes(message.exchange)
            let routingKey = scratch.bytes(message.routingKey)
            status = message.body.withUnsafeBytes { body in
                guarded {
                    // rabbitmq-c only reads the body (copies it into its frame buffer).
                    amqp_basic_publish(
                        state, channel, exchange, routingKey, message.mandatory ? 1 : 0, 0, &properties,
                        amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
                }
            }
            scratch.recycle()
        }
        if status == AMQP_STATUS_TABLE_TOO_BIG.rawValue { return .tooLarge }
        guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "publishing failed") }
        return .sent
    }

    /// Whether `connection.update-secret` can be sent: its answer, update-secret-ok, is
    /// unknown to rabbitmq-c before 0.12, which then fails every later read on the connection;
    /// and it is encoded by the frame writer.
    var canUpdateSecret: Bool { writer != nil && Self.libraryReadsUpdateSecretOk }

    /// rabbitmq-c 0.12 or later (its version number: major << 24 | minor << 16 | patch << 8).
    static let libraryReadsUpdateSecretOk = amqp_version_number() >= 0x000C_0000

    /// Bytes waiting for the socket to take them.
    var writeBacklog: Int { writer?.backlog ?? 0 }

    /// Writes what is buffered, as far as the socket takes it now. Returns whether bytes
    /// are left (then poll for writability); `publishes` counts the publishes now fully written.
    func flush(publishes: inout Int) throws(RabbitMQError) -> Bool {
        publishes += writtenDirectly
        writtenDirectly = 0
        guard let writer, !writer.isEmpty else { return false }
        switch writer.write(publishes: &publishes) {
        case .done, .needsInput: return false
        case .wouldBlock: return true
        case .failed(let status): throw .library(status, "sending to the broker failed")
        }
    }

    /// Publishes buffered but never written (the connection is gone), and those written
    /// but not yet counted.
    func discardUnwritten() -> Int {
        defer { writtenDirectly = 0 }
        return (writer?.discard() ?? 0) + writtenDirectly
    }

    /// How long the kernel has received nothing on the socket; nil when it cannot tell.
    var silence: Duration? {
        let milliseconds = crmq_tcp_last_data_recv_ms(socketDescriptor)
        return milliseconds < 0 ? nil : .milliseconds(milliseconds)
    }

    /// Runs a rabbitmq-c call that may block in a send (TLS reads, and writes without a
    /// writer), under the watchdog's eye.
    @inline(__always)
    private func guarded<T>(_ body: () -> T) -> T {
        if let watch { return watch.guarded(body) }
        return body()
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
