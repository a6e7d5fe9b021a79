import CRabbitMQ
import Glibc

/// Encodes publishes (basic.publish method, content header and body frames) into one buffer
/// and writes a whole batch with one `sendmsg`, where `amqp_basic_publish` makes three
/// `send` calls per message. I/O thread only.
///
/// rabbitmq-c's view of the connection stays right: it keeps no per-publish state (no
/// sequence numbers, no flow state), only the time of its last send, which decides when it
/// sends a heartbeat; it may send one that was not needed, which is harmless. The one rule
/// is ordering: every byte buffered here is written before rabbitmq-c sends or reads
/// anything else, so the I/O loop flushes before each of its rabbitmq-c calls.
///
/// Plain TCP only: a TLS connection's bytes must go through rabbitmq-c's OpenSSL socket, so
/// there publishes keep using `amqp_basic_publish`.
final class PublishWriter {
    /// Bodies up to this size are copied into the buffer; larger ones are written from the
    /// caller's array (scatter/gather) and flush the batch at once.
    static let copyLimit = 4096
    /// A batch is written once it holds this much.
    static let flushThreshold = 64 * 1024
    /// IOV_MAX on Linux (a macro Swift does not import).
    static let maxVectors = 1024

    /// The connection's socket (rabbitmq-c's, non-blocking); set on every (re)connect.
    var socketDescriptor: Int32 = -1
    private var buffer: UnsafeMutableRawPointer
    private var capacity: Int
    private(set) var count = 0
    private var frameMax: Int
    private var iovecs: [iovec] = []

    init(socket: Int32, frameMax: Int) {
        socketDescriptor = socket
        self.frameMax = frameMax > 0 ? frameMax : 131_072
        capacity = Self.flushThreshold + 2 * self.frameMax
        buffer = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit {
        buffer.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    /// Drops unsent bytes: the connection they were meant for is gone.
    func discard() { count = 0 }

    /// Drops unsent bytes (the connection they were meant for is gone) and adopts a new frame size.
    func reset(socket: Int32, frameMax: Int) {
        count = 0
        socketDescriptor = socket
        let frameMax = frameMax > 0 ? frameMax : 131_072
        if frameMax != self.frameMax {
            self.frameMax = frameMax
            let needed = Self.flushThreshold + 2 * frameMax
            if needed > capacity {
                buffer.deallocate()
                capacity = needed
                buffer = .allocate(byteCount: capacity, alignment: 16)
            }
        }
    }

    var shouldFlush: Bool { count >= Self.flushThreshold }

    // MARK: Encoding

    /// Appends one publish. A body above ``copyLimit`` is written at once, with the batch.
    /// Returns a negative rabbitmq-c status when the socket write fails.
    ///
    /// Every write stays inside the buffer: the method frame (at most 530 bytes) and the
    /// header frame (at most frame_max, checked while encoding) fit in the room ensured
    /// first; a copied body flushes first when it would not fit; a large body's framing is
    /// written in chunks the buffer can hold. A message whose header frame would exceed
    /// frame_max (publishers are refused that earlier, see `OutboundMessage.validate`) is
    /// taken back out of the buffer and reported with `AMQP_STATUS_TABLE_TOO_BIG`; the
    /// batch before it is unaffected.
    func append(channel: UInt16, message: OutboundMessage, scratch: ScratchPool) -> Int32 {
        if capacity - count < 2 * frameMax + 1024 {
            let status = flush()
            guard status == AMQP_STATUS_OK.rawValue else { return status }
        }
        let messageStart = count
        appendMethodFrame(channel: channel, message: message)
        let status = appendHeaderFrame(channel: channel, properties: message.properties, bodySize: message.body.count, scratch: scratch)
        guard status == AMQP_STATUS_OK.rawValue else {
            count = messageStart
            return status
        }
        let body = message.body
        if body.count <= Self.copyLimit {
            if !body.isEmpty {
                // Body frames add 8 bytes each; frame_max is at least 4096, so at most two.
                if capacity - count < body.count + 16 {
                    let status = flush()
                    guard status == AMQP_STATUS_OK.rawValue else { return status }
                }
                body.withUnsafeBytes { bytes in
                    appendBodyFrame(channel: channel, bytes.baseAddress!, bytes.count)
                }
            }
            return AMQP_STATUS_OK.rawValue
        }
        return body.withUnsafeBytes { bytes in
            flushWithBody(channel: channel, UnsafeRawBufferPointer(bytes))
        }
    }

    private func appendMethodFrame(channel: UInt16, message: OutboundMessage) {
        let start = count
        put(UInt8(AMQP_FRAME_METHOD))
        put(channel)
        count += 4  // payload size, filled in below
        put(UInt32(AMQP_BASIC_PUBLISH_METHOD))
        put(UInt16(0))  // ticket
        putShortString(message.exchange)
        putShortString(message.routingKey)
        put(UInt8(message.mandatory ? 1 : 0))
        patchSize(frameStart: start)
        put(UInt8(AMQP_FRAME_END))
    }

    private func appendHeaderFrame(
        channel: UInt16, properties: RabbitMQProperties, bodySize: Int, scratch: ScratchPool
    ) -> Int32 {
        let start = count
        put(UInt8(AMQP_FRAME_HEADER))
        put(channel)
        count += 4
        put(UInt16(AMQP_BASIC_CLASS))
        put(UInt16(0))  // weight
        put(UInt64(bodySize))
        // The whole frame, frame end included, must fit in frame_max.
        let status = putProperties(properties, scratch: scratch, limit: start + frameMax - 1)
        guard status == AMQP_STATUS_OK.rawValue else { return status }
        patchSize(frameStart: start)
        put(UInt8(AMQP_FRAME_END))
        return AMQP_STATUS_OK.rawValue
    }

    private func appendBodyFrame(channel: UInt16, _ base: UnsafeRawPointer, _ length: Int) {
        let maxPayload = frameMax - 8
        var offset = 0
        while offset < length {
            let chunk = min(maxPayload, length - offset)
            put(UInt8(AMQP_FRAME_BODY))
            put(channel)
            put(UInt32(chunk))
            (buffer + count).copyMemory(from: base + offset, byteCount: chunk)
            count += chunk
            put(UInt8(AMQP_FRAME_END))
            offset += chunk
        }
    }

    /// The property flags and fields, as AMQP encodes them (shortstr lengths were checked
    /// when the message was published; headers go through rabbitmq-c's table encoder).
    private func putProperties(_ p: RabbitMQProperties, scratch: ScratchPool, limit: Int) -> Int32 {
        let flagsOffset = count
        count += 2
        var flags: UInt16 = 0
        if p.isKnownEmpty {
            buffer.storeBytes(of: flags, toByteOffset: flagsOffset, as: UInt16.self)
            return AMQP_STATUS_OK.rawValue
        }
        // Everything but the headers has a known size: the table gets what is left of the frame.
        let fieldsStart = count
        let others = Self.sizeWithoutHeaders(p)
        guard fieldsStart + others <= limit else { return AMQP_STATUS_TABLE_TOO_BIG.rawValue }
        if let v = p.contentType { putShortString(v); flags |= UInt16(AMQP_BASIC_CONTENT_TYPE_FLAG) }
        if let v = p.contentEncoding { putShortString(v); flags |= UInt16(AMQP_BASIC_CONTENT_ENCODING_FLAG) }
        if let v = p.headers {
            // The table ends where the fields that follow it (all but the two written) must start.
            let afterTable = others - (count - fieldsStart)
            var table = scratch.table(v)
            var offset = count
            let status = amqp_encode_table(amqp_bytes_t(len: limit - afterTable, bytes: buffer), &table, &offset)
            scratch.recycle()
            guard status == AMQP_STATUS_OK.rawValue else { return status }
            count = offset
            flags |= UInt16(AMQP_BASIC_HEADERS_FLAG)
        }
        if let v = p.deliveryMode { put(v.rawValue); flags |= UInt16(AMQP_BASIC_DELIVERY_MODE_FLAG) }
        if let v = p.priority { put(v); flags |= UInt16(AMQP_BASIC_PRIORITY_FLAG) }
        if let v = p.correlationID { putShortString(v); flags |= UInt16(AMQP_BASIC_CORRELATION_ID_FLAG) }
        if let v = p.replyTo { putShortString(v); flags |= UInt16(AMQP_BASIC_REPLY_TO_FLAG) }
        if let v = p.expiration { putShortString(v); flags |= UInt16(AMQP_BASIC_EXPIRATION_FLAG) }
        if let v = p.messageID { putShortString(v); flags |= UInt16(AMQP_BASIC_MESSAGE_ID_FLAG) }
        if let v = p.timestamp { put(v); flags |= UInt16(AMQP_BASIC_TIMESTAMP_FLAG) }
        if let v = p.type { putShortString(v); flags |= UInt16(AMQP_BASIC_TYPE_FLAG) }
        if let v = p.userID { putShortString(v); flags |= UInt16(AMQP_BASIC_USER_ID_FLAG) }
        if let v = p.appID { putShortString(v); flags |= UInt16(AMQP_BASIC_APP_ID_FLAG) }
        if let v = p.clusterID { putShortString(v); flags |= UInt16(AMQP_BASIC_CLUSTER_ID_FLAG) }
        buffer.storeBytes(of: flags.bigEndian, toByteOffset: flagsOffset, as: UInt16.self)
        return AMQP_STATUS_OK.rawValue
    }

    /// The encoded size of every property but the headers.
    static func sizeWithoutHeaders(_ p: RabbitMQProperties) -> Int {
        func short(_ value: String?) -> Int { value.map { 1 + min($0.utf8.count, 255) } ?? 0 }
        var size = short(p.contentType) + short(p.contentEncoding) + short(p.correlationID) + short(p.replyTo)
        size += short(p.expiration) + short(p.messageID) + short(p.type) + short(p.userID) + short(p.appID)
        size += short(p.clusterID)
        if p.deliveryMode != nil { size += 1 }
        if p.priority != nil { size += 1 }
        if p.timestamp != nil { size += 8 }
        return size
    }

    @inline(__always)
    private func put<T: FixedWidthInteger>(_ value: T) {
        buffer.storeBytes(of: value.bigEndian, toByteOffset: count, as: T.self)
        count += MemoryLayout<T>.size
    }

    @inline(__always)
    private func putShortString(_ string: String) {
        var string = string
        string.withUTF8 { utf8 in
            // Lengths above 255 are refused before a message is queued.
            let length = min(utf8.count, 255)
            buffer.storeBytes(of: UInt8(length), toByteOffset: count, as: UInt8.self)
            if length > 0 { (buffer + count + 1).copyMemory(from: utf8.baseAddress!, byteCount: length) }
            count += 1 + length
        }
    }

    /// Writes the payload size of the frame that starts at `frameStart` (header: 7 bytes).
    @inline(__always)
    private func patchSize(frameStart: Int) {
        let payload = UInt32(count - frameStart - 7)
        buffer.storeBytes(of: payload.bigEndian, toByteOffset: frameStart + 3, as: UInt32.self)
    }

    // MARK: Writing

    /// Writes everything buffered. Returns a rabbitmq-c status.
    func flush() -> Int32 {
        guard count > 0 else { return AMQP_STATUS_OK.rawValue }
        iovecs.removeAll(keepingCapacity: true)
        iovecs.append(iovec(iov_base: buffer, iov_len: count))
        let status = writeAll()
        count = 0
        return status
    }

    /// Writes the buffer, then `body` as body frames whose 8 framing bytes are buffered
    /// here and whose payloads are written from `body` itself, in one scatter/gather write.
    private func flushWithBody(channel: UInt16, _ body: UnsafeRawBufferPointer) -> Int32 {
        // Framing bytes go in the buffer, 8 per body frame (7-byte header, frame end), as
        // many frames at a time as it has room for; payloads are written from `body` itself.
        let maxPayload = frameMax - 8
        var offset = 0
        while offset < body.count {
            let firstFraming = count
            let room = min((capacity - count) / 8, Self.maxVectors)
            var framing = firstFraming
            var end = offset
            var frames = 0
            while end < body.count, frames < room {
                let chunk = min(maxPayload, body.count - end)
                put(UInt8(AMQP_FRAME_BODY))
                put(channel)
                put(UInt32(chunk))
                put(UInt8(AMQP_FRAME_END))
                end += chunk
                frames += 1
            }
            iovecs.removeAll(keepingCapacity: true)
            // What precedes these frames, and the first frame's header, are contiguous.
            iovecs.append(iovec(iov_base: buffer, iov_len: firstFraming + 7))
            while offset < end {
                let chunk = min(maxPayload, body.count - offset)
                if framing != firstFraming { iovecs.append(iovec(iov_base: buffer + framing, iov_len: 7)) }
                iovecs.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress! + offset), iov_len: chunk))
                iovecs.append(iovec(iov_base: buffer + framing + 7, iov_len: 1))
                offset += chunk
                framing += 8
            }
            let status = writeAll()
            count = 0
            guard status == AMQP_STATUS_OK.rawValue else { return status }
        }
        return AMQP_STATUS_OK.rawValue
    }

    /// `sendmsg` until every iovec is written; waits in `poll` when the socket is full (the
    /// watchdog unsticks a wait on a dead peer, as it does for rabbitmq-c's own sends).
    private func writeAll() -> Int32 {
        let socket = socketDescriptor
        var first = 0
        while first < iovecs.count {
            let batch = min(iovecs.count - first, Self.maxVectors)
            let written = iovecs.withUnsafeMutableBufferPointer { vectors -> Int in
                var message = msghdr()
                message.msg_iov = vectors.baseAddress! + first
                message.msg_iovlen = batch
                return sendmsg(socket, &message, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                switch errno {
                case EINTR:
                    continue
                case EAGAIN, EWOULDBLOCK:
                    var descriptor = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
                    if poll(&descriptor, 1, -1) < 0 && errno != EINTR { return AMQP_STATUS_SOCKET_ERROR.rawValue }
                    continue
                default:
                    return AMQP_STATUS_SOCKET_ERROR.rawValue
                }
            }
            var remaining = written
            while remaining > 0 && first < iovecs.count {
                if remaining >= iovecs[first].iov_len {
                    remaining -= iovecs[first].iov_len
                    first += 1
                } else {
                    iovecs[first].iov_base += remaining
                    iovecs[first].iov_len -= remaining
                    remaining = 0
                }
            }
        }
        return AMQP_STATUS_OK.rawValue
    }
}
