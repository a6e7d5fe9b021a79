import CRabbitMQ
import Glibc
import Logging

/// The one owner of a connection's `amqp_connection_state_t`.
///
/// It runs on a dedicated OS thread and is the only code that calls rabbitmq-c for its
/// connection. Each turn it drains every readable frame and dispatches it, runs the commands
/// other threads queued in the ``ConnectionCore``, checks deadlines, and sleeps in `poll()`
/// on the socket and an eventfd for at most half a heartbeat interval, so heartbeats are
/// sent and checked whatever the application is doing. No user code runs here: it only
/// resumes continuations and yields into streams.
final class IOLoop {
    struct Closing {
        var waiters: [CheckedContinuation<Void, any Error>]
        var deadline: ContinuousClock.Instant
        var sentClose = false
    }

    // The loop's state is touched by its own thread only, so the hot properties skip the
    // dynamic exclusivity checks (marked @exclusivity(unchecked)); the static checks stay.
    let core: ConnectionCore
    let configuration: RabbitMQConfiguration
    var logger: Logger
    @exclusivity(unchecked) var state: amqp_connection_state_t?
    var socketDescriptor: Int32 = -1
    let scratch = ScratchPool()
    @exclusivity(unchecked) var channels: [UInt16: ChannelIO] = [:] {
        didSet { lastChannel = nil }
    }
    /// The channel of the last frame: frames come in runs on one channel, so most lookups
    /// skip hashing.
    @exclusivity(unchecked) private var lastChannel: ChannelIO?
    @exclusivity(unchecked) var commands: [Command] = []
    @exclusivity(unchecked) var held: [(ChannelShared, OutboundMessage, ConfirmTicket?)] = []
    @exclusivity(unchecked) var heldIndex = 0
    @exclusivity(unchecked) var blocked = false
    @exclusivity(unchecked) var closing: Closing?
    @exclusivity(unchecked) var finished = false
    var heartbeat = 0
    let clock = ContinuousClock()
    @exclusivity(unchecked) var watch: Watchdog.Registration?
    /// Bumped on every reconnect; deliveries carry it so stale settlements are dropped.
    @exclusivity(unchecked) var epoch: UInt64 = 1
    /// What to declare again after a reconnect.
    var registry = TopologyRegistry()
    var random = SystemRandomNumberGenerator()
    /// Consumers whose iterator waits for deliveries that arrived this turn: woken once, at
    /// the end of the read turn, with everything that arrived (not once per message).
    @exclusivity(unchecked) var consumersToWake: [DeliveryBuffer] = []
    /// Batches publishes into one write per turn (plain TCP); nil on TLS connections.
    @exclusivity(unchecked) var writer: PublishWriter?

    /// Frames read per drain before commands get a turn.
    private static let frameBudget = 256
    /// Publishes sent between two drains, so confirms and deliveries keep flowing.
    private static let publishBatch = 128

    private init(core: ConnectionCore) {
        self.core = core
        self.configuration = core.configuration
        self.logger = core.logger
    }

    // MARK: Thread

    static func makeWakeDescriptor() throws(RabbitMQError) -> Int32 {
        let descriptor = crmq_eventfd()
        guard descriptor >= 0 else {
            throw RabbitMQError(code: .library, message: "eventfd failed: errno \(errno)")
        }
        return descriptor
    }

    /// Starts the I/O thread; `onConnect` resumes once the connection is open or has failed.
    static func start(core: ConnectionCore, onConnect: CheckedContinuation<Void, any Error>) {
        let box = Unmanaged.passRetained(StartBox(core: core, onConnect: onConnect)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, ioThreadMain, box)
        if status != 0 {
            Unmanaged<StartBox>.fromOpaque(box).release()
            onConnect.resume(throwing: RabbitMQError(code: .library, message: "pthread_create failed: \(status)"))
            return
        }
        pthread_detach(thread)
    }

    fileprivate final class StartBox: Sendable {
        let core: ConnectionCore
        let onConnect: CheckedContinuation<Void, any Error>
        init(core: ConnectionCore, onConnect: CheckedContinuation<Void, any Error>) {
            self.core = core
            self.onConnect = onConnect
        }
    }

    fileprivate static func threadMain(_ box: StartBox) {
        crmq_set_thread_name(box.core.threadName)
        let loop = IOLoop(core: box.core)
        do {
            try loop.connect()
        } catch {
            _ = box.core.markTerminal(error)
            box.core.finishEvents()
            box.onConnect.resume(throwing: error)
            return
        }
        box.onConnect.resume()
        loop.run()
    }

    // MARK: Connect

    /// One pass over the endpoints (in order or shuffled); returns the one that answered.
    /// A refused login stops the pass: other nodes of the cluster would refuse it too.
    @discardableResult
    func connect() throws(RabbitMQError) -> RabbitMQConfiguration.Endpoint {
        var failures: [String] = []
        var lastError: RabbitMQError?
        var endpoints = configuration.endpoints
        if configuration.endpointSelection == .shuffled { endpoints.shuffle(using: &random) }
        for endpoint in endpoints {
            do {
                try connect(to: endpoint)
                logger[metadataKey: LogKey.endpoint] = "\(endpoint)"
                logger.info(
                    "connected",
                    metadata: ["rabbitmq.heartbeat": "\(heartbeat)", "rabbitmq.frame_max": "\(core.negotiated.frameMax)"])
                core.emit(.connected(endpoint: endpoint.description))
                return endpoint
            } catch {
                destroyState()
                logger.debug(
                    "connection attempt failed",
                    metadata: [LogKey.endpoint: "\(endpoint)", LogKey.error: "\(error)"])
                if Self.isLoginRefusal(error) { throw error }
                failures.append("\(endpoint): \(error.message)")
                lastError = error
            }
        }
        if endpoints.count == 1, let lastError { throw lastError }
        throw RabbitMQError(
            code: lastError?.code ?? .connectFailed, scope: .connection,
            message: "no endpoint could be reached (\(failures.joined(separator: "; ")))",
            libraryStatus: lastError?.libraryStatus)
    }

    static func isLoginRefusal(_ error: RabbitMQError) -> Bool {
        error.code == .authenticationFailed || error.code == .accessRefused || error.code == .notAllowed
    }

    func connect(to endpoint: RabbitMQConfiguration.Endpoint) throws(RabbitMQError) {
        guard let state = amqp_new_connection() else {
            throw RabbitMQError(code: .library, message: "amqp_new_connection failed")
        }
        self.state = state
        let socket: OpaquePointer?
        if endpoint.useTLS {
            socket = amqp_ssl_socket_new(state)
            if let socket { try configureTLS(socket) }
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else { throw RabbitMQError(code: .library, message: "could not create a socket") }

        var connectTimeout = timeval(configuration.connectTimeout)
        let openStatus = amqp_socket_open_noblock(socket, endpoint.host, Int32(endpoint.port), &connectTimeout)
        guard openStatus == AMQP_STATUS_OK.rawValue else {
            var error = RabbitMQError.library(openStatus, "could not connect to \(endpoint)")
            if error.code != .tls { error.code = .connectFailed }
            throw error
        }

        var handshakeTimeout = timeval(configuration.handshakeTimeout)
        amqp_set_handshake_timeout(state, &handshakeTimeout)
        var properties = scratch.table(clientProperties())
        let heartbeatSeconds = Int32(configuration.heartbeat.components.seconds)
        let reply = crmq_login_plain(
            state, configuration.virtualHost, Int32(configuration.channelMax), Int32(configuration.frameMax),
            heartbeatSeconds, &properties, configuration.username, configuration.password)
        scratch.recycle()
        try checkLogin(reply, endpoint: endpoint)

        // A backstop only: after login we never call rabbitmq-c's blocking RPC helpers.
        var requestTimeout = timeval(configuration.requestTimeout)
        amqp_set_rpc_timeout(state, &requestTimeout)
        socketDescriptor = amqp_get_sockfd(state)
        heartbeat = Int(amqp_get_heartbeat(state))
        var negotiated = ConnectionCore.Negotiated()
        negotiated.channelMax = Int(amqp_get_channel_max(state))
        negotiated.frameMax = Int(amqp_get_frame_max(state))
        negotiated.heartbeat = heartbeat
        if let server = amqp_get_server_properties(state) {
            negotiated.serverProperties = RabbitMQFieldTable(cTable: server.pointee)
        }
        negotiated.endpoint = endpoint
        core.setNegotiated(negotiated)
        watch = Watchdog.shared.register(socket: socketDescriptor, heartbeatSeconds: heartbeat)
        if endpoint.useTLS {
            writer = nil
        } else if let writer {
            writer.reset(socket: socketDescriptor, frameMax: negotiated.frameMax)
        } else {
            writer = PublishWriter(socket: socketDescriptor, frameMax: negotiated.frameMax)
        }
    }

    /// Runs a rabbitmq-c call that may block in a send, under the watchdog's eye.
    @inline(__always)
    func guarded<T>(_ body: () -> T) -> T {
        if let watch { return watch.guarded(body) }
        return body()
    }

    func configureTLS(_ socket: OpaquePointer) throws(RabbitMQError) {
        let tls = configuration.tls
        _ = amqp_ssl_socket_set_ssl_versions(socket, AMQP_TLSv1_2, AMQP_TLSvLATEST)
        amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
        amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        if let ca = tls.caCertificatePath {
            let status = amqp_ssl_socket_set_cacert(socket, ca)
            guard status == AMQP_STATUS_OK.rawValue else {
                throw RabbitMQError(code: .tls, message: "could not load CA certificates from \(ca)", libraryStatus: status)
            }
        }
        if let certificate = tls.certificatePath, let key = tls.keyPath {
            let status = amqp_ssl_socket_set_key(socket, certificate, key)
            guard status == AMQP_STATUS_OK.rawValue else {
                throw RabbitMQError(code: .tls, message: "could not load client certificate \(certificate)", libraryStatus: status)
            }
        }
    }

    func clientProperties() -> RabbitMQFieldTable {
        // rabbitmq-c advertises only authentication_failure_close and
        // exchange_exchange_bindings; without the others the broker never sends
        // basic.cancel, connection.blocked or basic.nack. It merges this table into its own.
        var properties = configuration.clientProperties
        properties["product"] = "swift-rabbitmq"
        properties["platform"] = "Swift"
        properties["capabilities"] = [
            "publisher_confirms": true,
            "consumer_cancel_notify": true,
            "connection.blocked": true,
            "basic.nack": true,
            "authentication_failure_close": true,
            "exchange_exchange_bindings": true,
            "per_consumer_qos": true,
        ]
        if let name = configuration.connectionName { properties["connection_name"] = .string(name) }
        return properties
    }

    func checkLogin(_ reply: amqp_rpc_reply_t, endpoint: RabbitMQConfiguration.Endpoint) throws(RabbitMQError) {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD, let decoded = reply.reply.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                var error = RabbitMQError.serverClose(
                    scope: .connection, replyCode: close.reply_code, replyText: String(amqpBytes: close.reply_text),
                    classID: close.class_id, methodID: close.method_id)
                if close.reply_code == 403 {
                    error.code = .authenticationFailed
                    error.message = "login refused by \(endpoint) for user '\(configuration.username)': \(error.replyText ?? "")"
                }
                throw error
            }
            throw RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected reply during login")
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            throw RabbitMQError.library(reply.library_error, "login to \(endpoint) failed")
        default:
            throw RabbitMQError(code: .protocolError, scope: .connection, message: "login to \(endpoint) failed")
        }
    }

    // MARK: Loop

    func run() {
        var pollDescriptors = [
            pollfd(fd: socketDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: core.wakeDescriptor, events: Int16(POLLIN), revents: 0),
        ]
        while !finished {
            do throws(RabbitMQError) {
                var busy = try drainFrames()
                busy = try runCommands() || busy
                try runTimers()
                if finished { break }
                if busy || amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0 { continue }
                guard core.prepareToSleep() else { continue }
                // Recovery replaces the socket: always poll the current one.
                pollDescriptors[0].fd = socketDescriptor
                pollDescriptors[0].revents = 0
                pollDescriptors[1].revents = 0
                let result = poll(&pollDescriptors, 2, pollTimeoutMilliseconds())
                if result < 0 && errno != EINTR {
                    throw RabbitMQError(code: .socketError, scope: .connection, message: "poll failed: errno \(errno)")
                }
                if pollDescriptors[1].revents != 0 {
                    var counter: UInt64 = 0
                    _ = read(core.wakeDescriptor, &counter, 8)
                }
            } catch {
                connectionLost(error)
            }
        }
    }

    func pollTimeoutMilliseconds() -> Int32 {
        // Half a heartbeat keeps heartbeats flowing; 250 ms bounds deadline checks.
        var timeout = 250
        if heartbeat > 0 { timeout = min(timeout, heartbeat * 500) }
        return Int32(timeout)
    }

    /// Reads and dispatches frames until none is buffered; returns true when the budget ran out.
    func drainFrames(budget: Int = IOLoop.frameBudget) throws(RabbitMQError) -> Bool {
        defer { wakeConsumers() }
        // Buffered publishes go out before rabbitmq-c reads (and maybe sends a heartbeat).
        // Once per drain: dispatching a frame buffers no publish (releaseHeld flushes its own).
        try flushPublishes()
        var frame = amqp_frame_t()
        var zero = timeval(tv_sec: 0, tv_usec: 0)
        for _ in 0..<budget {
            // With a zero timeout this returns a queued frame, reads what the socket has, or
            // times out at once; it also sends due heartbeats and reports a silent peer.
            let status = guarded { amqp_simple_wait_frame_noblock(state, &frame, &zero) }
            if status == AMQP_STATUS_TIMEOUT.rawValue { return false }
            guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "reading from the broker failed") }
            try dispatch(frame)
            if finished { return false }
            // Release the channel's pool right after copying the frame: releasing once per turn
            // is skipped whenever a drain stops mid-frame, and memory then grows without bound.
            amqp_maybe_release_buffers_on_channel(state, frame.channel)
        }
        return true
    }

    func wakeConsumers() {
        guard !consumersToWake.isEmpty else { return }
        for buffer in consumersToWake { buffer.wake() }
        consumersToWake.removeAll(keepingCapacity: true)
    }

    // MARK: Commands

    /// Runs queued commands; returns true when there may be more work right away.
    func runCommands() throws(RabbitMQError) -> Bool {
        core.takeCommands(into: &commands)
        guard !commands.isEmpty else { return false }
        var publishes = 0
        var sentSinceDrain = 0
        var index = 0
        defer {
            // On a thrown error the unexecuted rest stays for connectionLost to fail.
            if index >= commands.count { commands.removeAll(keepingCapacity: true) } else { commands.removeFirst(index) }
            core.releasePublishes(publishes)
        }
        while index < commands.count {
            // Moved out (a payload-free command left in its place), not copied: a publish
            // carries its whole message.
            var command = Command.close(nil)
            swap(&command, &commands[index])
            index += 1
            if case .publish(let shared, let message, let ticket) = command {
                // A held publish (connection blocked) keeps its place in the buffer limit
                // until it is really sent, so publishers stay suspended meanwhile.
                publishes += 1  // released in the defer, even when the send throws
                guard try publish(shared, message, ticket) else {
                    publishes -= 1
                    continue
                }
                sentSinceDrain += 1
                if sentSinceDrain >= Self.publishBatch {
                    sentSinceDrain = 0
                    core.releasePublishes(publishes)
                    publishes = 0
                    _ = try drainFrames(budget: 64)
                    if finished { return false }
                }
            } else {
                try execute(command)
                if finished { return false }
            }
        }
        try flushPublishes()
        return true
    }

    /// Writes the publishes the ``PublishWriter`` holds. Called before every other rabbitmq-c
    /// send or read, so frames leave in the order they were made.
    @inline(__always)
    func flushPublishes() throws(RabbitMQError) {
        guard let writer, !writer.isEmpty else { return }
        let status = guarded { writer.flush() }
        guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "publishing failed") }
    }

    func execute(_ command: Command) throws(RabbitMQError) {
        try flushPublishes()
        switch command {
        case .openChannel(let shared, let continuation):
            guard closing == nil else {
                core.releaseChannel(shared.number)
                continuation.resume(throwing: RabbitMQError.connectionClosed("the connection is closing"))
                return
            }
            let channel = ChannelIO(shared: shared)
            channels[shared.number] = channel
            var open = amqp_channel_open_t(out_of_band: amqp_bytes_t(len: 0, bytes: nil))
            try send(shared.number, AMQP_CHANNEL_OPEN_METHOD, &open)
            enqueue(channel, .open(continuation), expecting: AMQP_CHANNEL_OPEN_OK_METHOD)

        case .request(let shared, let request, let continuation):
            guard let channel = usableChannel(shared) else {
                continuation.resume(throwing: closedError(shared))
                return
            }
            let expected = try send(request, on: channel)
            if case .confirmSelect = request { channel.confirmMode = true }
            enqueue(channel, .request(request, continuation), expecting: expected.0, or: expected.1)

        case .publish:
            preconditionFailure("publishes are handled in runCommands")

        case .settle(let shared, let settlement):
            // A settlement for a channel that closed meanwhile is dropped: the broker has
            // requeued the message, and a stale tag would close the new channel with 406.
            guard let channel = usableChannel(shared), settlement.epoch == epoch else { return }
            let status: Int32
            switch settlement.kind {
            case .ack:
                status = guarded { amqp_basic_ack(state, channel.number, settlement.deliveryTag, settlement.multiple ? 1 : 0) }
            case .nack:
                status = guarded {
                    amqp_basic_nack(
                        state, channel.number, settlement.deliveryTag, settlement.multiple ? 1 : 0, settlement.requeue ? 1 : 0)
                }
            case .reject:
                status = guarded { amqp_basic_reject(state, channel.number, settlement.deliveryTag, settlement.requeue ? 1 : 0) }
            }
            guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "sending an acknowledgement failed") }

        case .consume(let shared, let request, let sink, let continuation):
            guard let channel = usableChannel(shared) else {
                sink.buffer.finish(throwing: closedError(shared))
                continuation.resume(throwing: closedError(shared))
                return
            }
            var consume = amqp_basic_consume_t(
                ticket: 0, queue: scratch.bytes(request.queue), consumer_tag: scratch.bytes(request.consumerTag),
                no_local: 0, no_ack: request.noAck ? 1 : 0, exclusive: request.exclusive ? 1 : 0, nowait: 0,
                arguments: scratch.table(request.arguments))
            defer { scratch.recycle() }
            try send(channel.number, AMQP_BASIC_CONSUME_METHOD, &consume)
            // Registered now: deliveries may follow consume-ok in the same read.
            channel.consumers[request.consumerTag] = ChannelIO.Consumer(sink: sink, request: request)
            enqueue(channel, .consume(request.consumerTag, continuation), expecting: AMQP_BASIC_CONSUME_OK_METHOD)

        case .cancelConsumer(let shared, let tag, let continuation):
            guard let channel = usableChannel(shared), channel.consumers[tag] != nil else {
                continuation?.resume(returning: .ok)
                return
            }
            var cancel = amqp_basic_cancel_t(consumer_tag: scratch.bytes(tag), nowait: 0)
            defer { scratch.recycle() }
            try send(channel.number, AMQP_BASIC_CANCEL_METHOD, &cancel)
            enqueue(channel, .cancel(tag, continuation), expecting: AMQP_BASIC_CANCEL_OK_METHOD)

        case .closeChannel(let shared, let continuation):
            guard let channel = channels[shared.number], channel.shared === shared else {
                continuation.resume()
                return
            }
            channel.closeWaiters.append(continuation)
            if channel.phase != .closing { try beginClose(channel, reason: "closed by the application") }

        case .close(let continuation):
            beginConnectionClose(continuation)
        }
    }

    func usableChannel(_ shared: ChannelShared) -> ChannelIO? {
        // Through the one-entry cache: a publishing channel is looked up for every message.
        guard let channel = channel(shared.number), channel.shared === shared, channel.phase == .open else {
            return nil
        }
        return channel
    }

    func closedError(_ shared: ChannelShared) -> RabbitMQError {
        shared.closeReason ?? core.terminalError ?? .channelClosed()
    }

    func enqueue(
        _ channel: ChannelIO, _ kind: ChannelIO.Pending.Kind, expecting reply: amqp_method_number_t,
        or alternative: amqp_method_number_t? = nil
    ) {
        channel.pending.append(
            ChannelIO.Pending(
                kind: kind, expected: (reply, alternative ?? reply),
                deadline: clock.now.advanced(by: configuration.requestTimeout)))
    }

    func send(_ channel: UInt16, _ method: amqp_method_number_t, _ body: UnsafeMutableRawPointer) throws(RabbitMQError) {
        try flushPublishes()
        let status = guarded { amqp_send_method(state, channel, method, body) }
        guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "sending to the broker failed") }
    }

    /// Encodes and sends a synchronous request; returns the reply method(s) it expects.
    func send(_ request: ChannelRequest, on channel: ChannelIO) throws(RabbitMQError) -> (amqp_method_number_t, amqp_method_number_t) {
        defer { scratch.recycle() }
        let number = channel.number
        switch request {
        case .exchangeDeclare(let name, let type, let passive, let durable, let autoDelete, let isInternal, let arguments):
            var method = amqp_exchange_declare_t(
                ticket: 0, exchange: scratch.bytes(name), type: scratch.bytes(type), passive: passive ? 1 : 0,
                durable: durable ? 1 : 0, auto_delete: autoDelete ? 1 : 0, internal: isInternal ? 1 : 0, nowait: 0,
                arguments: scratch.table(arguments))
            try send(number, AMQP_EXCHANGE_DECLARE_METHOD, &method)
            return (AMQP_EXCHANGE_DECLARE_OK_METHOD, AMQP_EXCHANGE_DECLARE_OK_METHOD)
        case .exchangeDelete(let name, let ifUnused):
            var method = amqp_exchange_delete_t(ticket: 0, exchange: scratch.bytes(name), if_unused: ifUnused ? 1 : 0, nowait: 0)
            try send(number, AMQP_EXCHANGE_DELETE_METHOD, &method)
            return (AMQP_EXCHANGE_DELETE_OK_METHOD, AMQP_EXCHANGE_DELETE_OK_METHOD)
        case .exchangeBind(let destination, let source, let key, let arguments):
            var method = amqp_exchange_bind_t(
                ticket: 0, destination: scratch.bytes(destination), source: scratch.bytes(source),
                routing_key: scratch.bytes(key), nowait: 0, arguments: scratch.table(arguments))
            try send(number, AMQP_EXCHANGE_BIND_METHOD, &method)
            return (AMQP_EXCHANGE_BIND_OK_METHOD, AMQP_EXCHANGE_BIND_OK_METHOD)
        case .exchangeUnbind(let destination, let source, let key, let arguments):
            var method = amqp_exchange_unbind_t(
                ticket: 0, destination: scratch.bytes(destination), source: scratch.bytes(source),
                routing_key: scratch.bytes(key), nowait: 0, arguments: scratch.table(arguments))
            try send(number, AMQP_EXCHANGE_UNBIND_METHOD, &method)
            return (AMQP_EXCHANGE_UNBIND_OK_METHOD, AMQP_EXCHANGE_UNBIND_OK_METHOD)
        case .queueDeclare(let name, let passive, let durable, let exclusive, let autoDelete, let arguments):
            var method = amqp_queue_declare_t(
                ticket: 0, queue: scratch.bytes(name), passive: passive ? 1 : 0, durable: durable ? 1 : 0,
                exclusive: exclusive ? 1 : 0, auto_delete: autoDelete ? 1 : 0, nowait: 0,
                arguments: scratch.table(arguments))
            try send(number, AMQP_QUEUE_DECLARE_METHOD, &method)
            return (AMQP_QUEUE_DECLARE_OK_METHOD, AMQP_QUEUE_DECLARE_OK_METHOD)
        case .queueBind(let queue, let exchange, let key, let arguments):
            var method = amqp_queue_bind_t(
                ticket: 0, queue: scratch.bytes(queue), exchange: scratch.bytes(exchange),
                routing_key: scratch.bytes(key), nowait: 0, arguments: scratch.table(arguments))
            try send(number, AMQP_QUEUE_BIND_METHOD, &method)
            return (AMQP_QUEUE_BIND_OK_METHOD, AMQP_QUEUE_BIND_OK_METHOD)
        case .queueUnbind(let queue, let exchange, let key, let arguments):
            var method = amqp_queue_unbind_t(
                ticket: 0, queue: scratch.bytes(queue), exchange: scratch.bytes(exchange),
                routing_key: scratch.bytes(key), arguments: scratch.table(arguments))
            try send(number, AMQP_QUEUE_UNBIND_METHOD, &method)
            return (AMQP_QUEUE_UNBIND_OK_METHOD, AMQP_QUEUE_UNBIND_OK_METHOD)
        case .queuePurge(let name):
            var method = amqp_queue_purge_t(ticket: 0, queue: scratch.bytes(name), nowait: 0)
            try send(number, AMQP_QUEUE_PURGE_METHOD, &method)
            return (AMQP_QUEUE_PURGE_OK_METHOD, AMQP_QUEUE_PURGE_OK_METHOD)
        case .queueDelete(let name, let ifUnused, let ifEmpty):
            var method = amqp_queue_delete_t(
                ticket: 0, queue: scratch.bytes(name), if_unused: ifUnused ? 1 : 0, if_empty: ifEmpty ? 1 : 0, nowait: 0)
            try send(number, AMQP_QUEUE_DELETE_METHOD, &method)
            return (AMQP_QUEUE_DELETE_OK_METHOD, AMQP_QUEUE_DELETE_OK_METHOD)
        case .basicQos(let prefetchCount, let global):
            var method = amqp_basic_qos_t(prefetch_size: 0, prefetch_count: prefetchCount, global: global ? 1 : 0)
            try send(number, AMQP_BASIC_QOS_METHOD, &method)
            return (AMQP_BASIC_QOS_OK_METHOD, AMQP_BASIC_QOS_OK_METHOD)
        case .basicGet(let queue, let noAck):
            var method = amqp_basic_get_t(ticket: 0, queue: scratch.bytes(queue), no_ack: noAck ? 1 : 0)
            try send(number, AMQP_BASIC_GET_METHOD, &method)
            return (AMQP_BASIC_GET_OK_METHOD, AMQP_BASIC_GET_EMPTY_METHOD)
        case .confirmSelect:
            var method = amqp_confirm_select_t(nowait: 0)
            try send(number, AMQP_CONFIRM_SELECT_METHOD, &method)
            return (AMQP_CONFIRM_SELECT_OK_METHOD, AMQP_CONFIRM_SELECT_OK_METHOD)
        }
    }

    // MARK: Publishing

    /// Sends a publish, or holds it while the connection is blocked; returns whether it was sent.
    func publish(_ shared: ChannelShared, _ message: OutboundMessage, _ ticket: ConfirmTicket?) throws(RabbitMQError) -> Bool {
        if blocked || heldIndex < held.count {
            // connection.blocked: the broker stopped reading; a send now would block this
            // thread. Hold publishes (bounded by publishBufferLimit upstream) until unblocked.
            held.append((shared, message, ticket))
            return false
        }
        try send(shared, message, ticket)
        return true
    }

    func send(_ shared: ChannelShared, _ message: OutboundMessage, _ ticket: ConfirmTicket?) throws(RabbitMQError) {
        guard let channel = usableChannel(shared) else {
            let error = closedError(shared)
            ticket?.resolve(.failure(error))
            if shared.isConfirmMode { shared.releaseConfirmSlots(1) }
            return
        }
        if channel.confirmMode {
            // Recorded before the send: if the connection dies inside it, recovery publishes
            // the message again instead of losing it.
            let keep = message.mandatory || configuration.recovery.republishUnconfirmed
            channel.unconfirmed.append(ChannelIO.Unconfirmed(ticket: ticket, message: keep ? message : nil))
        }
        if let writer {
            let status = guarded { writer.append(channel: channel.number, message: message, scratch: scratch) }
            if status == AMQP_STATUS_TABLE_TOO_BIG.rawValue {
                // Its content header cannot fit in a frame (refused at publish time already,
                // unless frame_max shrank in a recovery): fail this message alone.
                let error = RabbitMQError(
                    code: .invalidConfiguration, scope: .none,
                    message: "the message's properties do not fit in one frame of \(core.negotiated.frameMax) bytes")
                logger.error("a message was not published", metadata: [LogKey.channel: "\(channel.number)", LogKey.error: "\(error)"])
                if channel.confirmMode {
                    _ = channel.unconfirmed.dropLast()
                    channel.shared.releaseConfirmSlots(1)
                }
                ticket?.resolve(.failure(error))
                return
            }
            guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "publishing failed") }
            if writer.shouldFlush { try flushPublishes() }
            return
        }
        var properties = scratch.properties(message.properties)
        let exchange = scratch.bytes(message.exchange)
        let routingKey = scratch.bytes(message.routingKey)
        let status = message.body.withUnsafeBytes { body in
            guarded {
                // rabbitmq-c only reads the body (copies it into its frame buffer).
                amqp_basic_publish(
                    state, channel.number, exchange, routingKey, message.mandatory ? 1 : 0, 0, &properties,
                    amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
            }
        }
        scratch.recycle()
        guard status == AMQP_STATUS_OK.rawValue else { throw .library(status, "publishing failed") }
    }

    func releaseHeld() throws(RabbitMQError) {
        var sent = 0
        defer { core.releasePublishes(sent) }
        while !blocked, heldIndex < held.count {
            let (shared, message, ticket) = held[heldIndex]
            heldIndex += 1
            sent += 1
            try send(shared, message, ticket)
        }
        try flushPublishes()
        if heldIndex == held.count {
            held.removeAll(keepingCapacity: false)
            heldIndex = 0
        }
    }

    // MARK: Dispatch

    func dispatch(_ frame: amqp_frame_t) throws(RabbitMQError) {
        let number = frame.channel
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            if number == 0 {
                try connectionMethod(frame.payload.method)
            } else {
                try channelMethod(number, frame.payload.method)
            }
        case AMQP_FRAME_HEADER:
            // The content is changed in place and moved out when complete: never copied.
            guard let channel = channel(number), channel.content?.bodySize == -1 else {
                throw RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected content header on channel \(number)")
            }
            if let decoded = frame.payload.properties.decoded {
                let properties = decoded.assumingMemoryBound(to: amqp_basic_properties_t.self)
                if properties.pointee._flags != 0 {
                    channel.content!.message.properties = RabbitMQProperties.reusing(
                        &channel.recentProperties, flags: &channel.recentPropertiesFlags, for: properties.pointee)
                }
            }
            let size = Int(frame.payload.properties.body_size)
            if size == 0 {
                contentComplete(channel, channel.content.take()!)
            } else {
                channel.content!.bodySize = size
                // Reserved once, for the whole body (the generic array initialisers cost a
                // metadata lookup of a few hundred instructions per message).
                channel.content!.message.body.reserveCapacity(size)
            }
        case AMQP_FRAME_BODY:
            guard let channel = channel(number), let size = channel.content?.bodySize, size >= 0 else {
                throw RabbitMQError(code: .protocolError, scope: .connection, message: "unexpected content body on channel \(number)")
            }
            let fragment = frame.payload.body_fragment
            if fragment.len > 0, let base = fragment.bytes {
                channel.content!.message.body.append(contentsOf: UnsafeRawBufferPointer(start: base, count: fragment.len))
                channel.content!.received += fragment.len
            }
            if channel.content!.received >= size { contentComplete(channel, channel.content.take()!) }
        default:
            break
        }
    }

    func connectionMethod(_ method: amqp_method_t) throws(RabbitMQError) {
        switch method.id {
        case AMQP_CONNECTION_CLOSE_METHOD:
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let error = RabbitMQError.serverClose(
                scope: .connection, replyCode: close.reply_code, replyText: String(amqpBytes: close.reply_text),
                classID: close.class_id, methodID: close.method_id)
            var closeOk = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &closeOk)
            throw error
        case AMQP_CONNECTION_CLOSE_OK_METHOD:
            if closing?.sentClose == true { teardown(nil) }
        case AMQP_CONNECTION_BLOCKED_METHOD:
            let blockedMethod = method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            let reason = String(amqpBytes: blockedMethod.reason)
            blocked = true
            logger.info("connection blocked by the broker", metadata: ["rabbitmq.reason": "\(reason)"])
            core.emit(.blocked(reason: reason))
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            blocked = false
            logger.info("connection unblocked by the broker")
            core.emit(.unblocked)
            try releaseHeld()
        default:
            throw RabbitMQError(
                code: .protocolError, scope: .connection, message: "unexpected method \(method.id) on channel 0")
        }
    }

    @inline(__always)
    func channel(_ number: UInt16) -> ChannelIO? {
        if let lastChannel, lastChannel.number == number { return lastChannel }
        let channel = channels[number]
        lastChannel = channel
        return channel
    }

    func channelMethod(_ number: UInt16, _ method: amqp_method_t) throws(RabbitMQError) {
        guard let channel = channel(number) else {
            logger.debug("frame for an unknown channel ignored", metadata: [LogKey.channel: "\(number)"])
            return
        }
        let decoded = method.decoded
        if method.id == AMQP_CHANNEL_CLOSE_METHOD {
            let close = decoded!.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            var closeOk = amqp_channel_close_ok_t(dummy: 0)
            try send(number, AMQP_CHANNEL_CLOSE_OK_METHOD, &closeOk)
            let error = RabbitMQError.serverClose(
                scope: .channel, replyCode: close.reply_code, replyText: String(amqpBytes: close.reply_text),
                classID: close.class_id, methodID: close.method_id)
            logger.info(
                "channel closed by the broker", metadata: [LogKey.channel: "\(number)", LogKey.error: "\(error)"])
            finishChannel(channel, error: error, graceful: false)
            return
        }
        if channel.phase == .closing {
            // Between our channel.close and its close-ok, everything else is discarded.
            if method.id == AMQP_CHANNEL_CLOSE_OK_METHOD {
                finishChannel(channel, error: channel.shared.closeReason ?? .channelClosed("closed by the application"), graceful: true)
            }
            return
        }
        switch method.id {
        case AMQP_BASIC_DELIVER_METHOD:
            let deliver = decoded!.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            try beginContent(
                channel, .deliver,
                RabbitMQDelivery(
                    body: [], properties: RabbitMQProperties(), exchange: .reusing(&channel.recentExchange, for: deliver.exchange),
                    routingKey: .reusing(&channel.recentRoutingKey, for: deliver.routing_key), redelivered: deliver.redelivered != 0,
                    deliveryTag: deliver.delivery_tag, consumerTag: .reusing(&channel.recentTag, for: deliver.consumer_tag),
                    messageCount: nil, channel: nil, epoch: epoch))
        case AMQP_BASIC_RETURN_METHOD:
            let returned = decoded!.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            try beginContent(
                channel, .returned(replyCode: returned.reply_code, replyText: String(amqpBytes: returned.reply_text)),
                RabbitMQDelivery(
                    body: [], properties: RabbitMQProperties(), exchange: String(amqpBytes: returned.exchange),
                    routingKey: String(amqpBytes: returned.routing_key), redelivered: false, deliveryTag: 0, consumerTag: "",
                    messageCount: nil, channel: nil, epoch: epoch))
        case AMQP_BASIC_GET_OK_METHOD:
            let getOk = decoded!.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
            try beginContent(
                channel, .get,
                RabbitMQDelivery(
                    body: [], properties: RabbitMQProperties(), exchange: String(amqpBytes: getOk.exchange),
                    routingKey: String(amqpBytes: getOk.routing_key), redelivered: getOk.redelivered != 0,
                    deliveryTag: getOk.delivery_tag, consumerTag: "", messageCount: getOk.message_count, channel: nil,
                    epoch: epoch))
        case AMQP_BASIC_ACK_METHOD:
            let ack = decoded!.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            confirm(channel, ack.delivery_tag, multiple: ack.multiple != 0, acked: true)
        case AMQP_BASIC_NACK_METHOD:
            let nack = decoded!.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            confirm(channel, nack.delivery_tag, multiple: nack.multiple != 0, acked: false)
        case AMQP_BASIC_CANCEL_METHOD:
            // consumer_cancel_notify: the broker cancelled this consumer (queue deleted,
            // node failure). It sends nowait, so no cancel-ok is due.
            let cancel = decoded!.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            let tag = String(amqpBytes: cancel.consumer_tag)
            if let consumer = channel.consumers.removeValue(forKey: tag) {
                logger.info("consumer cancelled by the broker", metadata: [LogKey.consumerTag: "\(tag)"])
                consumer.sink.buffer.finish(
                    throwing: RabbitMQError(
                        code: .consumerCancelled,
                        message: "the broker cancelled consumer \(tag) (its queue was deleted or became unavailable)"))
            }
        default:
            try reply(channel, method)
        }
    }

    func beginContent(_ channel: ChannelIO, _ kind: ChannelIO.Content.Kind, _ message: consuming RabbitMQDelivery) throws(RabbitMQError) {
        guard channel.content == nil else {
            throw RabbitMQError(
                code: .protocolError, scope: .connection, message: "content method before the previous content ended")
        }
        channel.content = ChannelIO.Content(kind: kind, message: message)
    }

    /// Matches a reply to its request (see ``ChannelIO/takeRequest(answeredBy:consumerTag:)``).
    func reply(_ channel: ChannelIO, _ method: amqp_method_t) throws(RabbitMQError) {
        var consumerTag: String?
        if method.id == AMQP_BASIC_CONSUME_OK_METHOD {
            consumerTag = String(amqpBytes: method.decoded!.assumingMemoryBound(to: amqp_basic_consume_ok_t.self).pointee.consumer_tag)
        } else if method.id == AMQP_BASIC_CANCEL_OK_METHOD {
            consumerTag = String(amqpBytes: method.decoded!.assumingMemoryBound(to: amqp_basic_cancel_ok_t.self).pointee.consumer_tag)
        }
        // basic.get-ok never comes here: it completes its request when its content is complete.
        guard let head = channel.takeRequest(answeredBy: method.id, consumerTag: consumerTag) else {
            throw RabbitMQError(
                code: .protocolError, scope: .connection,
                message: "unexpected method \(method.id) on channel \(channel.number)")
        }
        switch head.kind {
        case .open(let continuation):
            channel.phase = .open
            continuation.resume()
        case .request(let request, let continuation):
            let reply = decodeReply(method)
            record(request, reply: reply, on: channel)
            continuation.resume(returning: reply)
        case .consume(let tag, let continuation):
            continuation.resume(returning: .consumerTag(tag))
        case .cancel(let tag, let continuation):
            if let consumer = channel.consumers.removeValue(forKey: tag) {
                consumer.sink.buffer.finish()
                forgetAutoDeleteQueue(consumer.request.queue)
            }
            continuation?.resume(returning: .ok)
        case .close:
            break
        case .internal(let box):
            if method.id == AMQP_CHANNEL_OPEN_OK_METHOD { channel.phase = .open }
            box.result = .success(decodeReply(method))
        }
    }

    /// Copies a reply's fields out of rabbitmq-c's pool.
    func decodeReply(_ method: amqp_method_t) -> ChannelReply {
        let decoded = method.decoded
        switch method.id {
        case AMQP_QUEUE_DECLARE_OK_METHOD:
            let ok = decoded!.assumingMemoryBound(to: amqp_queue_declare_ok_t.self).pointee
            return .queueDeclared(
                RabbitMQQueueDeclareResult(
                    name: String(amqpBytes: ok.queue), messageCount: ok.message_count, consumerCount: ok.consumer_count))
        case AMQP_QUEUE_PURGE_OK_METHOD:
            return .messageCount(decoded!.assumingMemoryBound(to: amqp_queue_purge_ok_t.self).pointee.message_count)
        case AMQP_QUEUE_DELETE_OK_METHOD:
            return .messageCount(decoded!.assumingMemoryBound(to: amqp_queue_delete_ok_t.self).pointee.message_count)
        case AMQP_BASIC_CONSUME_OK_METHOD:
            return .consumerTag(String(amqpBytes: decoded!.assumingMemoryBound(to: amqp_basic_consume_ok_t.self).pointee.consumer_tag))
        case AMQP_BASIC_GET_EMPTY_METHOD:
            return .delivery(nil)
        default:
            return .ok
        }
    }

    /// Keeps the topology registry in step with what the broker accepted.
    func record(_ request: ChannelRequest, reply: ChannelReply, on channel: ChannelIO) {
        switch request {
        case .exchangeDeclare(let name, let type, let passive, let durable, let autoDelete, let isInternal, let arguments):
            guard !passive, !name.isEmpty else { return }
            registry.record(
                .init(name: name, type: type, durable: durable, autoDelete: autoDelete, isInternal: isInternal, arguments: arguments))
        case .exchangeDelete(let name, _):
            registry.deleteExchange(named: name)
        case .exchangeBind(let destination, let source, let routingKey, let arguments):
            registry.record(
                .init(destinationKind: .exchange, destination: destination, source: source, routingKey: routingKey, arguments: arguments))
        case .exchangeUnbind(let destination, let source, let routingKey, let arguments):
            registry.removeBinding(
                .init(destinationKind: .exchange, destination: destination, source: source, routingKey: routingKey, arguments: arguments))
        case .queueDeclare(let name, let passive, let durable, let exclusive, let autoDelete, let arguments):
            guard !passive, case .queueDeclared(let result) = reply else { return }
            registry.record(
                .init(
                    requestedName: name, name: result.name, durable: durable, exclusive: exclusive, autoDelete: autoDelete,
                    arguments: arguments))
        case .queueDelete(let name, _, _):
            registry.deleteQueue(named: name)
        case .queueBind(let queue, let exchange, let routingKey, let arguments):
            registry.record(
                .init(destinationKind: .queue, destination: queue, source: exchange, routingKey: routingKey, arguments: arguments))
        case .queueUnbind(let queue, let exchange, let routingKey, let arguments):
            registry.removeBinding(
                .init(destinationKind: .queue, destination: queue, source: exchange, routingKey: routingKey, arguments: arguments))
        case .basicQos(let prefetchCount, let global):
            channel.prefetch = (prefetchCount, global)
        case .queuePurge, .basicGet, .confirmSelect:
            break
        }
    }

    /// The broker deletes an auto-delete queue when its last consumer goes: forget it too.
    func forgetAutoDeleteQueue(_ name: String) {
        guard let queue = registry.queue(named: name), queue.autoDelete else { return }
        let stillConsumed = channels.values.contains { channel in
            channel.consumers.values.contains { $0.request.queue == name }
        }
        if !stillConsumed { registry.deleteQueue(named: name) }
    }

    func contentComplete(_ channel: ChannelIO, _ content: consuming ChannelIO.Content) {
        let kind = content.kind
        var delivery = content.message
        // Ends `content` here, so `delivery` is the storage's only owner and is changed in place.
        _ = consume content
        switch kind {
        case .deliver:
            guard let sink = channel.sink(forConsumer: delivery.consumerTag) else {
                logger.debug("delivery for an unknown consumer ignored", metadata: [LogKey.consumerTag: "\(delivery.consumerTag)"])
                return
            }
            if !sink.noAck { delivery.settleOn(channel.shared) }
            if let handler = sink.handler {
                handler(delivery)
                return
            }
            let deliveryTag = delivery.deliveryTag
            switch sink.buffer.push(delivery) {
            case .buffered:
                break
            case .needsWake:
                consumersToWake.append(sink.buffer)
            case .terminated:
                // Nobody iterates any more (the cancel is on its way): give it back at once
                // instead of leaving it unacknowledged until the channel closes.
                if !sink.noAck { _ = guarded { amqp_basic_reject(state, channel.number, deliveryTag, 1) } }
            }
        case .returned(let replyCode, let replyText):
            let message = RabbitMQReturnedMessage(
                replyCode: replyCode, replyText: replyText, exchange: delivery.exchange, routingKey: delivery.routingKey,
                properties: delivery.properties, body: delivery.body)
            if channel.confirmMode { attachReturn(channel, message) }
            channel.shared.emitReturn(message)
        case .get:
            guard let head = channel.takeRequest(answeredBy: AMQP_BASIC_GET_OK_METHOD, consumerTag: nil),
                case .request(let request, let continuation) = head.kind,
                case .basicGet(_, let noAck) = request
            else { return }
            if !noAck { delivery.settleOn(channel.shared) }
            continuation.resume(returning: .delivery(delivery))
        }
    }

    // MARK: Confirms

    /// basic.return carries no sequence number but precedes the ack of its message: give it
    /// to the oldest unconfirmed mandatory publish with the same exchange, key and body.
    func attachReturn(_ channel: ChannelIO, _ message: RabbitMQReturnedMessage) {
        var sequence = channel.unconfirmed.oldest
        while sequence < channel.unconfirmed.next {
            if var entry = channel.unconfirmed[sequence], entry.returned == nil, let sent = entry.message, sent.mandatory,
                sent.exchange == message.exchange, sent.routingKey == message.routingKey, sent.body == message.body
            {
                entry.returned = message
                channel.unconfirmed[sequence] = entry
                return
            }
            sequence += 1
        }
    }

    func confirm(_ channel: ChannelIO, _ tag: UInt64, multiple: Bool, acked: Bool) {
        var resolved = 0
        channel.unconfirmed.remove(from: multiple ? 0 : tag, through: tag) { entry in
            resolved += 1
            let outcome: RabbitMQPublishOutcome =
                if let returned = entry.returned { .returned(returned) } else if acked { .acked } else { .nacked }
            entry.ticket?.resolve(.success(outcome))
        }
        channel.shared.releaseConfirmSlots(resolved)
        logger.trace(
            "confirm",
            metadata: [
                LogKey.channel: "\(channel.number)", "rabbitmq.tag": "\(tag)", "rabbitmq.multiple": "\(multiple)",
                "rabbitmq.acked": "\(acked)", "rabbitmq.resolved": "\(resolved)",
            ])
    }

    // MARK: Channel close

    func beginClose(_ channel: ChannelIO, reason: String) throws(RabbitMQError) {
        channel.phase = .closing
        let error = RabbitMQError(code: .closed, scope: .channel, message: "the channel was \(reason)")
        channel.shared.markClosed(error)
        var close = amqp_channel_close_t(
            reply_code: 200, reply_text: scratch.bytes("Goodbye"), class_id: 0, method_id: 0)
        defer { scratch.recycle() }
        try send(channel.number, AMQP_CHANNEL_CLOSE_METHOD, &close)
        failPending(channel, error)
        enqueue(channel, .close, expecting: AMQP_CHANNEL_CLOSE_OK_METHOD)
    }

    func failPending(_ channel: ChannelIO, _ error: RabbitMQError) {
        for pending in channel.takeAllPending() {
            switch pending.kind {
            case .open(let continuation): continuation.resume(throwing: error)
            case .request(_, let continuation): continuation.resume(throwing: error)
            case .consume(_, let continuation): continuation.resume(throwing: error)
            case .cancel(_, let continuation): continuation?.resume(throwing: error)
            case .close: break
            case .internal(let box): box.result = .failure(error)
            }
        }
    }

    /// The channel is gone (close-ok exchanged or connection lost): fail what waits on it
    /// and free its number.
    func finishChannel(_ channel: ChannelIO, error: RabbitMQError, graceful: Bool) {
        channels[channel.number] = nil
        channel.shared.markClosed(error)
        failPending(channel, error)
        for (_, consumer) in channel.consumers {
            if graceful { consumer.sink.buffer.finish() } else { consumer.sink.buffer.finish(throwing: error) }
        }
        channel.consumers.removeAll()
        let unconfirmed = channel.unconfirmed.takeAll()
        for entry in unconfirmed { entry.ticket?.resolve(.failure(error)) }
        for entry in channel.republish { entry.ticket?.resolve(.failure(error)) }
        channel.shared.releaseConfirmSlots(unconfirmed.count + channel.republish.count)
        channel.republish.removeAll()
        for waiter in channel.closeWaiters { waiter.resume() }
        channel.closeWaiters.removeAll()
        core.releaseChannel(channel.number)
    }

    // MARK: Timers

    func runTimers() throws(RabbitMQError) {
        let now = clock.now
        for channel in channels.values {
            guard let head = channel.head, head.deadline <= now else { continue }
            let error = RabbitMQError(
                code: .timeout, scope: .channel,
                message: "the broker did not answer within \(configuration.requestTimeout) on channel \(channel.number)")
            logger.warning("request timed out; closing its channel", metadata: [LogKey.channel: "\(channel.number)"])
            if channel.phase == .closing {
                // Not even close-ok came back: the connection is unusable.
                throw RabbitMQError(code: .timeout, scope: .connection, message: error.message)
            }
            failPending(channel, error)
            channel.shared.markClosed(error)
            try beginClose(channel, reason: "closed after a request timeout")
        }
        if let closing {
            if !closing.sentClose {
                let drained = channels.values.allSatisfy { $0.unconfirmed.isEmpty } && heldIndex == held.count
                if drained || closing.deadline <= now { try sendConnectionClose() }
            } else if closing.deadline <= now {
                logger.debug("no close-ok before the deadline; dropping the socket")
                teardown(nil)
            }
        }
    }

    // MARK: Connection close

    func beginConnectionClose(_ continuation: CheckedContinuation<Void, any Error>?) {
        if closing != nil {
            if let continuation { closing!.waiters.append(continuation) }
            return
        }
        logger.debug("closing")
        closing = Closing(
            waiters: continuation.map { [$0] } ?? [], deadline: clock.now.advanced(by: configuration.closeTimeout))
        let error = RabbitMQError(code: .closed, scope: .connection, message: "the connection was closed by the application")
        // From here on new commands fail; the ones already queued are still run.
        let remaining = core.markTerminal(error)
        commands.append(contentsOf: remaining)
    }

    func sendConnectionClose() throws(RabbitMQError) {
        closing?.sentClose = true
        var close = amqp_connection_close_t(
            reply_code: 200, reply_text: scratch.bytes("Normal shutdown"), class_id: 0, method_id: 0)
        defer { scratch.recycle() }
        try send(0, AMQP_CONNECTION_CLOSE_METHOD, &close)
    }

    // MARK: Teardown

    func connectionLost(_ error: RabbitMQError) {
        if closing != nil {
            // The socket went away while we were closing anyway.
            teardown(nil)
            return
        }
        logger.warning("connection lost", metadata: [LogKey.error: "\(error)"])
        if configuration.recovery.isEnabled && Self.isRecoverable(error) {
            recover(after: error)
        } else {
            teardown(error)
        }
    }

    /// Ends the connection: fails or finishes everything that waits, destroys the C state,
    /// stops the loop. `error` is nil for a close the application asked for.
    func teardown(_ error: RabbitMQError?) {
        guard !finished else { return }
        finished = true
        let failure = error ?? RabbitMQError(code: .closed, scope: .connection, message: "the connection was closed by the application")
        let remaining = core.markTerminal(failure)
        let unexecuted = commands + remaining
        commands.removeAll()
        for channel in Array(channels.values) {
            finishChannel(channel, error: failure, graceful: error == nil)
        }
        for (_, _, ticket) in held[heldIndex...] { ticket?.resolve(.failure(failure)) }
        core.releasePublishes(held.count - heldIndex)
        held.removeAll()
        heldIndex = 0
        var droppedPublishes = 0
        for command in unexecuted {
            fail(command, failure)
            if case .publish = command { droppedPublishes += 1 }
        }
        core.releasePublishes(droppedPublishes)
        core.failPublishWaiters(failure)
        destroyState()
        core.emit(.closed(error))
        core.finishEvents()
        if error == nil { logger.info("closed") }
        for waiter in closing?.waiters ?? [] { waiter.resume() }
        closing = nil
    }

    func fail(_ command: Command, _ error: RabbitMQError) {
        switch command {
        case .openChannel(let shared, let continuation):
            core.releaseChannel(shared.number)
            continuation.resume(throwing: error)
        case .request(_, _, let continuation): continuation.resume(throwing: error)
        case .publish(let shared, _, let ticket):
            ticket?.resolve(.failure(error))
            shared.markClosed(error)
        case .settle: break
        case .consume(_, _, let sink, let continuation):
            sink.buffer.finish(throwing: error)
            continuation.resume(throwing: error)
        case .cancelConsumer(_, _, let continuation): continuation?.resume(returning: .ok)
        case .closeChannel(_, let continuation): continuation.resume()
        case .close(let continuation):
            if let continuation {
                if closing == nil { continuation.resume() } else { closing!.waiters.append(continuation) }
            }
        }
    }

    func destroyState() {
        writer?.discard()
        if let watch {
            Watchdog.shared.unregister(watch)
            self.watch = nil
        }
        if let state {
            amqp_destroy_connection(state)
            self.state = nil
        }
        socketDescriptor = -1
    }
}

private func ioThreadMain(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let box = Unmanaged<IOLoop.StartBox>.fromOpaque(argument!).takeRetainedValue()
    IOLoop.threadMain(box)
    return nil
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
