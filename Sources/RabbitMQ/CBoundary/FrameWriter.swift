import CRabbitMQ
import Glibc

/// Every byte a connection sends after login: methods, publishes (basic.publish, content
/// header and body frames) and heartbeats, encoded into one buffer and written in batches,
/// never blocking: with `sendmsg` on plain TCP, with `SSL_write` on the connection's SSL
/// object on TLS (one encrypted write per stretch of the buffer, not three per message as
/// rabbitmq-c's `amqp_basic_publish` does). I/O thread only.
///
/// rabbitmq-c still reads frames, but sends nothing after login: its heartbeat timer is
/// switched off (the I/O loop sends heartbeats through here), so no frame of rabbitmq-c can
/// land in the middle of one of ours, and no send can block the thread (rabbitmq-c 0.11
/// waits in `poll` without a limit when the socket is full). When the socket is full the
/// bytes stay here; the loop polls for writability and goes on reading frames, running
/// timers and serving `close()` meanwhile. The buffer is bounded by the publish buffer's
/// room: a publish gives its room back only once its bytes reached the kernel (``write()``
/// counts them).
///
/// Bodies up to ``copyLimit`` are copied; larger ones are written from the caller's array
/// (kept alive here until written), with their framing bytes in the buffer.
///
/// Used by its connection's I/O thread only: its state skips the dynamic exclusivity checks.
final class FrameWriter {
    static let copyLimit = 4096
    /// IOV_MAX on Linux (a macro Swift does not import).
    static let maxVectors = 1024

    /// A stretch of bytes to write: from the buffer, or from a message's own body.
    private struct Segment {
        enum Source {
            case buffer(start: Int)
            case body([UInt8], start: Int)
        }
        var source: Source
        var length: Int
    }

    /// The connection's socket (rabbitmq-c's, non-blocking).
    let socketDescriptor: Int32
    let frameMax: Int
    @exclusivity(unchecked) private var buffer: UnsafeMutableRawPointer
    @exclusivity(unchecked) private var capacity: Int
    /// Bytes used in `buffer` (from 0; the written prefix is reclaimed when it is large).
    @exclusivity(unchecked) private var count = 0
    @exclusivity(unchecked) private var segments: [Segment] = []
    @exclusivity(unchecked) private var segmentHead = 0
    /// Bytes appended and written since the start: a publish is written once `written`
    /// passes its end.
    @exclusivity(unchecked) private var appended = 0
    @exclusivity(unchecked) private var written = 0
    /// Where each publish not yet fully written ends, in `appended` terms.
    @exclusivity(unchecked) private var publishEnds: [Int] = []
    @exclusivity(unchecked) private var publishEndsHead = 0
    @exclusivity(unchecked) private var iovecs: [iovec] = []

    /// The connection's OpenSSL `SSL` (rabbitmq-c's, non-blocking, partial writes on), or nil
    /// on plain TCP.
    private let ssl: OpaquePointer?

    init(socket: Int32, frameMax: Int, ssl: OpaquePointer? = nil) {
        socketDescriptor = socket
        self.ssl = ssl
        self.frameMax = frameMax > 0 ? frameMax : 131_072
        capacity = 64 * 1024 + 2 * self.frameMax
        buffer = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit {
        buffer.deallocate()
    }

    /// Bytes waiting to be written.
    var backlog: Int { appended - written }
    var isEmpty: Bool { appended == written }

    // MARK: Room

    /// Makes room for `bytes` more at the end of the buffer.
    private func reserve(_ bytes: Int) {
        if capacity - count >= bytes { return }
        if isEmpty {
            resetBuffer()
            if capacity >= bytes { return }
        } else {
            compact()
            if capacity - count >= bytes { return }
        }
        var newCapacity = capacity * 2
        while newCapacity - count < bytes { newCapacity *= 2 }
        let newBuffer = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        newBuffer.copyMemory(from: buffer, byteCount: count)
        buffer.deallocate()
        buffer = newBuffer
        capacity = newCapacity
    }

    private func resetBuffer() {
        count = 0
        segments.removeAll(keepingCapacity: true)
        segmentHead = 0
    }

    /// Moves the unwritten part of the buffer to its front.
    private func compact() {
        guard segmentHead < segments.count else {
            resetBuffer()
            return
        }
        var first: Int?
        for index in segmentHead..<segments.count {
            if case .buffer(let start) = segments[index].source {
                first = start
                break
            }
        }
        guard let first, first > 0 else { return }
        (buffer).copyMemory(from: buffer + first, byteCount: count - first)
        count -= first
        for index in segmentHead..<segments.count {
            if case .buffer(let start) = segments[index].source { segments[index].source = .buffer(start: start - first) }
        }
        if segmentHead > 0 {
            segments.removeFirst(segmentHead)
            segmentHead = 0
        }
    }

    /// Records that `length` bytes were just put at `start` in the buffer.
    @inline(__always)
    private func commitLocal(from start: Int) {
        let length = count - start
        guard length > 0 else { return }
        appended += length
        if segmentHead < segments.count, case .buffer(let lastStart) = segments[segments.count - 1].source,
            lastStart + segments[segments.count - 1].length == start
        {
            segments[segments.count - 1].length += length
        } else {
            segments.append(Segment(source: .buffer(start: start), length: length))
        }
    }

    // MARK: Encoding

    /// Appends a method frame; `decoded` is the rabbitmq-c structure of method `id`.
    func appendMethod(channel: UInt16, id: amqp_method_number_t, decoded: UnsafeMutableRawPointer) -> Int32 {
        reserve(frameMax + 16)
        let start = count
        put(UInt8(AMQP_FRAME_METHOD))
        put(channel)
        count += 4
        put(UInt32(id))
        let encoded = amqp_encode_method(id, decoded, amqp_bytes_t(len: frameMax - 12, bytes: buffer + count))
        guard encoded >= 0 else {
            count = start
            return encoded
        }
        count += Int(encoded)
        patchSize(frameStart: start)
        put(UInt8(AMQP_FRAME_END))
        commitLocal(from: start)
        return AMQP_STATUS_OK.rawValue
    }

    /// Appends `connection.update-secret` (rabbitmq-c 0.11 has no encoder for it): a long
    /// string and a short string. The caller checked that it fits in a frame.
    func appendUpdateSecret(secret: String, reason: String) {
        var secret = secret
        secret.withUTF8 { bytes in
            reserve(bytes.count + 300)
            let start = count
            put(UInt8(AMQP_FRAME_METHOD))
            put(UInt16(0))
            put(UInt32(0))  // the payload size, patched below
            put(AMQPMethodID.connectionUpdateSecret.rawValue)
            put(UInt32(bytes.count))
            if bytes.count > 0 { (buffer + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            count += bytes.count
            putShortString(reason)
            patchSize(frameStart: start)
            put(UInt8(AMQP_FRAME_END))
            commitLocal(from: start)
        }
    }

    func appendHeartbeat() {
        reserve(8)
        let start = count
        put(UInt8(AMQP_FRAME_HEARTBEAT))
        put(UInt16(0))
        put(UInt32(0))
        put(UInt8(AMQP_FRAME_END))
        commitLocal(from: start)
    }

    /// Appends one publish. A message whose header frame would exceed frame_max (publishers
    /// are refused that earlier, see `OutboundMessage.validate`) is taken back out and
    /// reported with `AMQP_STATUS_TABLE_TOO_BIG`; what was appended before it is unaffected.
    /// `holdsRoom`: counted by ``write(publishes:)`` once written.
    func appendPublish(channel: UInt16, message: OutboundMessage, returnTag: UInt64?, holdsRoom: Bool, scratch: ScratchPool) -> Int32 {
        reserve(2 * frameMax + 1024)
        let start = count
        appendMethodFrame(channel: channel, message: message)
        let status = appendHeaderFrame(channel: channel, message: message, returnTag: returnTag, scratch: scratch)
        guard status == AMQP_STATUS_OK.rawValue else {
            count = start
            return status
        }
        let body = message.body
        if body.count <= Self.copyLimit {
            // Body frames add 8 bytes each; frame_max is at least 4096, so at most two.
            if !body.isEmpty {
                if capacity - count < body.count + 16 {
                    commitLocal(from: start)
                    reserve(body.count + 16)
                    let bodyStart = count
                    body.withUnsafeBytes { appendBodyFrames(channel: channel, $0.baseAddress!, $0.count) }
                    commitLocal(from: bodyStart)
                } else {
                    body.withUnsafeBytes { appendBodyFrames(channel: channel, $0.baseAddress!, $0.count) }
                    commitLocal(from: start)
                }
            } else {
                commitLocal(from: start)
            }
        } else {
            commitLocal(from: start)
            appendExternalBody(channel: channel, body)
        }
        if holdsRoom { publishEnds.append(appended) }
        return AMQP_STATUS_OK.rawValue
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

    private func appendHeaderFrame(channel: UInt16, message: OutboundMessage, returnTag: UInt64?, scratch: ScratchPool) -> Int32 {
        let start = count
        put(UInt8(AMQP_FRAME_HEADER))
        put(channel)
        count += 4
        put(UInt16(AMQP_BASIC_CLASS))
        put(UInt16(0))  // weight
        put(UInt64(message.body.count))
        // The whole frame, frame end included, must fit in frame_max.
        let status = putProperties(message.properties, returnTag: returnTag, scratch: scratch, limit: start + frameMax - 1)
        guard status == AMQP_STATUS_OK.rawValue else { return status }
        patchSize(frameStart: start)
        put(UInt8(AMQP_FRAME_END))
        return AMQP_STATUS_OK.rawValue
    }

    private func appendBodyFrames(channel: UInt16, _ base: UnsafeRawPointer, _ length: Int) {
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

    /// A large body is written from the message's own array: only the 8 framing bytes of
    /// each body frame go in the buffer.
    private func appendExternalBody(channel: UInt16, _ body: [UInt8]) {
        let maxPayload = frameMax - 8
        var offset = 0
        while offset < body.count {
            let chunk = min(maxPayload, body.count - offset)
            reserve(8)
            let header = count
            put(UInt8(AMQP_FRAME_BODY))
            put(channel)
            put(UInt32(chunk))
            commitLocal(from: header)
            segments.append(Segment(source: .body(body, start: offset), length: chunk))
            appended += chunk
            let end = count
            put(UInt8(AMQP_FRAME_END))
            commitLocal(from: end)
            offset += chunk
        }
    }

    /// The property flags and fields, as AMQP encodes them (shortstr lengths were checked
    /// when the message was published; headers go through rabbitmq-c's table encoder).
    private func putProperties(_ p: RabbitMQProperties, returnTag: UInt64?, scratch: ScratchPool, limit: Int) -> Int32 {
        let flagsOffset = count
        count += 2
        var flags: UInt16 = 0
        if p.isKnownEmpty && returnTag == nil {
            buffer.storeBytes(of: flags, toByteOffset: flagsOffset, as: UInt16.self)
            return AMQP_STATUS_OK.rawValue
        }
        // Everything but the headers has a known size: the table gets what is left of the frame.
        let fieldsStart = count
        let others = Self.sizeWithoutHeaders(p)
        guard fieldsStart + others <= limit else { return AMQP_STATUS_TABLE_TOO_BIG.rawValue }
        if let v = p.contentType { putShortString(v); flags |= UInt16(AMQP_BASIC_CONTENT_TYPE_FLAG) }
        if let v = p.contentEncoding { putShortString(v); flags |= UInt16(AMQP_BASIC_CONTENT_ENCODING_FLAG) }
        if p.headers != nil || returnTag != nil {
            // The table ends where the fields that follow it (all but the two written) must start.
            let afterTable = others - (count - fieldsStart)
            var table = scratch.table(p.headers ?? [:], returnTag: returnTag)
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

    enum WriteResult {
        /// Everything is written.
        case done
        /// The socket is full: wait for it to become writable.
        case wouldBlock
        /// TLS must read first (a renegotiation): try again after the next read, without
        /// polling for writability, which would be ready at once and spin.
        case needsInput
        /// The socket failed (a rabbitmq-c status).
        case failed(Int32)
    }

    /// Writes as much as the socket takes now, without waiting. `publishes` counts the
    /// publishes whose last byte was written by this call.
    func write(publishes: inout Int) -> WriteResult {
        if let ssl { return writeTLS(ssl, publishes: &publishes) }
        while segmentHead < segments.count {
            iovecs.removeAll(keepingCapacity: true)
            var index = segmentHead
            while index < segments.count, iovecs.count < Self.maxVectors {
                let segment = segments[index]
                switch segment.source {
                case .buffer(let start):
                    iovecs.append(iovec(iov_base: buffer + start, iov_len: segment.length))
                case .body(let body, let start):
                    // The array is kept alive by `segments` until it is written.
                    body.withUnsafeBytes { bytes in
                        iovecs.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress! + start), iov_len: segment.length))
                    }
                }
                index += 1
            }
            let sent = iovecs.withUnsafeMutableBufferPointer { vectors -> Int in
                var message = msghdr()
                message.msg_iov = vectors.baseAddress!
                message.msg_iovlen = vectors.count
                return sendmsg(socketDescriptor, &message, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if sent < 0 {
                switch errno {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK: return .wouldBlock
                default: return .failed(AMQP_STATUS_SOCKET_ERROR.rawValue)
                }
            }
            advance(by: sent, publishes: &publishes)
        }
        resetBuffer()
        return .done
    }

    /// ``write(publishes:)`` through OpenSSL: each stretch (the buffer's, or a large body) in
    /// one `SSL_write`, which OpenSSL cuts into records of up to 16 KiB. After a WANT_WRITE the
    /// next call starts with the same stretch, no shorter (it may have grown, and moved: the
    /// shim sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), as OpenSSL requires.
    private func writeTLS(_ ssl: OpaquePointer, publishes: inout Int) -> WriteResult {
        while segmentHead < segments.count {
            let segment = segments[segmentHead]
            let result: Int
            switch segment.source {
            case .buffer(let start):
                result = crmq_tls_write(ssl, buffer + start, segment.length)
            case .body(let body, let start):
                result = body.withUnsafeBytes { bytes in crmq_tls_write(ssl, bytes.baseAddress! + start, segment.length) }
            }
            if result > 0 {
                advance(by: result, publishes: &publishes)
                continue
            }
            switch result {
            case CRMQ_TLS_WANT_WRITE: return .wouldBlock
            // A read the TLS layer needs first (renegotiation; not in TLS 1.3): the loop
            // reads, then flushes again.
            case CRMQ_TLS_WANT_READ: return .needsInput
            case CRMQ_TLS_CLOSED: return .failed(AMQP_STATUS_CONNECTION_CLOSED.rawValue)
            default: return .failed(AMQP_STATUS_SSL_ERROR.rawValue)
            }
        }
        resetBuffer()
        return .done
    }

    private func advance(by sent: Int, publishes: inout Int) {
        written += sent
        var remaining = sent
        while remaining > 0, segmentHead < segments.count {
            let length = segments[segmentHead].length
            if remaining >= length {
                remaining -= length
                segmentHead += 1
            } else {
                segments[segmentHead].length -= remaining
                switch segments[segmentHead].source {
                case .buffer(let start): segments[segmentHead].source = .buffer(start: start + remaining)
                case .body(let body, let start): segments[segmentHead].source = .body(body, start: start + remaining)
                }
                remaining = 0
            }
        }
        while publishEndsHead < publishEnds.count, publishEnds[publishEndsHead] <= written {
            publishEndsHead += 1
            publishes += 1
        }
        if publishEndsHead == publishEnds.count {
            publishEnds.removeAll(keepingCapacity: true)
            publishEndsHead = 0
        }
    }

    /// Drops what was not written (the connection is gone); returns the publishes dropped.
    func discard() -> Int {
        let dropped = publishEnds.count - publishEndsHead
        publishEnds.removeAll()
        publishEndsHead = 0
        written = appended
        resetBuffer()
        return dropped
    }
}
