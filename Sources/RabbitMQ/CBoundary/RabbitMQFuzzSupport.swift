import CRabbitMQ
import Glibc

/// Entry points for `rabbitmq-fuzz` into the C boundary: what a hostile broker's bytes go
/// through on their way in (rabbitmq-c's frame, method, property and table decoders, then
/// our conversion to Swift values), and what Swift values go through on their way out (our
/// conversion to rabbitmq-c's structures, its table encoder, and the frame writer). Not API:
/// only visible through `@_spi(Fuzzing) import`, and free to change with the fuzzer.
///
/// Each entry returns nil when every property held, or a description of the one that did
/// not (the fuzzer turns it into a crash it can minimise); a crash or a sanitizer report
/// inside is a finding too.
@_spi(Fuzzing)
public enum RabbitMQFuzzSupport {
    // MARK: Inbound

    /// `bytes` as an encoded field table (the 4-byte length first): decoded by rabbitmq-c;
    /// when it accepts them, converted to a ``RabbitMQFieldTable`` (or refused as nested too
    /// deep), encoded again from Swift and decoded again, which must give the same table.
    public static func decodeTable(_ bytes: UnsafeRawBufferPointer) -> String? {
        let pool = ScratchPool()
        var table = amqp_table_t()
        var offset = 0
        let status = amqp_decode_table(
            amqp_bytes_t(len: bytes.count, bytes: UnsafeMutableRawPointer(mutating: bytes.baseAddress)), pool.pool, &table, &offset)
        guard status == AMQP_STATUS_OK.rawValue else { return nil }
        guard offset <= bytes.count else { return "amqp_decode_table read \(offset) of \(bytes.count) bytes" }
        let swift: RabbitMQFieldTable
        do {
            swift = try RabbitMQFieldTable(cTable: table)
        } catch {
            return error.error.code == .protocolError ? nil : "a table nested too deep gave \(error.error)"
        }
        return reencodes(swift)
    }

    /// `bytes` as encoded basic properties (the flag words first), decoded by rabbitmq-c and
    /// converted as a content header's are (twice, the second through the decode cache),
    /// then encoded again from Swift and decoded again, which must give the same properties.
    public static func decodeProperties(_ bytes: UnsafeRawBufferPointer) -> String? {
        let pool = ScratchPool()
        var decoded: UnsafeMutableRawPointer?
        let status = amqp_decode_properties(
            UInt16(AMQP_BASIC_CLASS), pool.pool,
            amqp_bytes_t(len: bytes.count, bytes: UnsafeMutableRawPointer(mutating: bytes.baseAddress)), &decoded)
        guard status == AMQP_STATUS_OK.rawValue, let decoded else { return nil }
        let c = decoded.assumingMemoryBound(to: amqp_basic_properties_t.self).pointee
        var cached = RabbitMQProperties()
        var cachedFlags: amqp_flags_t = 0
        let first: RabbitMQProperties
        let second: RabbitMQProperties
        do {
            first = try RabbitMQProperties.reusing(&cached, flags: &cachedFlags, for: c)
            second = try RabbitMQProperties.reusing(&cached, flags: &cachedFlags, for: c)
        } catch {
            return nil
        }
        if let difference = identical(first, second) { return "decoding the same properties twice: \(difference)" }
        return reencodes(first)
    }

    /// `bytes` as what a broker sends after the protocol header: fed to rabbitmq-c's frame
    /// reader (`amqp_handle_input`, as `amqp_simple_wait_frame` does) in chunks whose sizes
    /// come from `chunking`, and every frame it accepts converted as the I/O loop does.
    public static func decodeFrames(_ bytes: UnsafeRawBufferPointer, chunking: UInt8) -> String? {
        guard let state = amqp_new_connection() else { return "amqp_new_connection failed" }
        defer { amqp_destroy_connection(state) }
        var cache = FrameCache()
        var remaining = bytes
        let chunk = Int(chunking) + 1
        while !remaining.isEmpty {
            var frame = amqp_frame_t()
            let take = Swift.min(chunk, remaining.count)
            let consumed = amqp_handle_input(
                state, amqp_bytes_t(len: take, bytes: UnsafeMutableRawPointer(mutating: remaining.baseAddress)), &frame)
            // A refused frame ends the connection (the I/O loop reports it lost).
            guard consumed >= 0 else { return nil }
            guard consumed > 0, consumed <= take else { return "amqp_handle_input consumed \(consumed) of \(take) bytes" }
            remaining = UnsafeRawBufferPointer(rebasing: remaining[Int(consumed)...])
            guard frame.frame_type != 0 else { continue }
            if let problem = cache.convert(frame) { return problem }
            amqp_maybe_release_buffers_on_channel(state, frame.channel)
        }
        return nil
    }

    /// What the I/O loop keeps between frames, for ``decodeFrames(_:chunking:)``.
    private struct FrameCache {
        var tag = ""
        var exchange = ""
        var routingKey = ""
        var properties = RabbitMQProperties()
        var flags: amqp_flags_t = 0

        mutating func convert(_ frame: amqp_frame_t) -> String? {
            switch Int32(frame.frame_type) {
            case AMQP_FRAME_METHOD:
                let method = frame.payload.method
                switch method.id {
                case AMQP_BASIC_DELIVER_METHOD:
                    let deliver = method.decoded!.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
                    _ = String.reusing(&tag, for: deliver.consumer_tag)
                    _ = String.reusing(&exchange, for: deliver.exchange)
                    _ = String.reusing(&routingKey, for: deliver.routing_key)
                case AMQP_BASIC_RETURN_METHOD:
                    let returned = method.decoded!.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
                    _ = (String(amqpBytes: returned.reply_text), String(amqpBytes: returned.exchange), String(amqpBytes: returned.routing_key))
                case AMQP_BASIC_GET_OK_METHOD:
                    let getOk = method.decoded!.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
                    _ = (String(amqpBytes: getOk.exchange), String(amqpBytes: getOk.routing_key))
                default:
                    _ = InboundMethod(cMethod: method)
                }
            case AMQP_FRAME_HEADER:
                let header = frame.payload.properties
                // A refusal is typed; the I/O loop turns it into a lost connection or an
                // undecodable message.
                _ = try? RabbitMQProperties.contentHeader(
                    classID: header.class_id, decoded: header.decoded, cached: &properties, flags: &flags)
            case AMQP_FRAME_BODY:
                let body = frame.payload.body_fragment
                _ = [UInt8](UnsafeRawBufferPointer(start: body.bytes, count: body.len))
            default:
                break
            }
            return nil
        }
    }

    // MARK: Outbound

    /// `table` as a publish's headers: refused with a typed error when AMQP cannot carry it
    /// (a key over 255 bytes, nested too deep), else converted to rabbitmq-c's structure,
    /// encoded, decoded and converted back, which must give `table` again.
    public static func roundTrip(_ table: RabbitMQFieldTable) -> String? {
        let (_, depth, longKey) = table.measured()
        guard depth <= RabbitMQFieldTable.maxDepth, !longKey else { return nil }
        return reencodes(table)
    }

    /// A publish of `body` with `properties`, encoded by the frame writer for `frameMax` (at
    /// least 4096), written to a socket pair and read back by rabbitmq-c's frame reader: the
    /// properties and body must come back, in frames no larger than `frameMax`. A message
    /// the publish path refuses must be refused with a typed error.
    public static func publish(_ properties: RabbitMQProperties, body: [UInt8], mandatory: Bool, frameMax: Int) -> String? {
        let message = OutboundMessage(body: body, exchange: "x", routingKey: "k", properties: properties, mandatory: mandatory)
        do {
            try message.validate()
            try message.validateHeaders { frameMax }
        } catch {
            return error.code == .invalidConfiguration ? nil : "a message was refused with \(error)"
        }
        let scratch = ScratchPool()
        var status = AMQP_STATUS_OK.rawValue
        let written = throughSocket(frameMax: frameMax, publishes: 1) { writer in
            status = writer.appendPublish(channel: 1, message: message, returnTag: mandatory ? 1 << 40 : nil, holdsRoom: true, scratch: scratch)
            return status == AMQP_STATUS_OK.rawValue
        }
        guard status == AMQP_STATUS_OK.rawValue else { return "a validated publish was not encoded: status \(status)" }
        switch written {
        case .failure(let problem): return problem.description
        case .success(let received):
            return received.withUnsafeBytes { readPublish($0, properties: properties, body: body, returnTag: mandatory, frameMax: frameMax) }
        }
    }

    /// A request carrying `names` and `arguments` (`kind` picks exchange.declare,
    /// exchange.bind, queue.declare, queue.bind or queue.unbind): refused with a typed error
    /// when AMQP cannot carry it in a frame of `frameMax` bytes, else encoded by the frame
    /// writer and read back by rabbitmq-c, arguments and all.
    public static func request(kind: UInt8, names: [String], arguments: RabbitMQFieldTable, frameMax: Int) -> String? {
        func name(_ index: Int) -> String { index < names.count ? names[index] : "" }
        let request: ChannelRequest
        switch kind % 5 {
        case 0:
            request = .exchangeDeclare(
                name: name(0), type: name(1), passive: false, durable: true, autoDelete: false, internal: false, arguments: arguments)
        case 1: request = .exchangeBind(destination: name(0), source: name(1), routingKey: name(2), arguments: arguments)
        case 2: request = .queueDeclare(name: name(0), passive: false, durable: true, exclusive: false, autoDelete: false, arguments: arguments)
        case 3: request = .queueBind(queue: name(0), exchange: name(1), routingKey: name(2), arguments: arguments)
        default: request = .queueUnbind(queue: name(0), exchange: name(1), routingKey: name(2), arguments: arguments)
        }
        do {
            try request.check(frameMax: frameMax)
        } catch {
            return error.code == .invalidConfiguration ? nil : "a request was refused with \(error)"
        }
        let scratch = ScratchPool()
        var status = AMQP_STATUS_OK.rawValue
        let written = throughSocket(frameMax: frameMax, publishes: 0) { writer in
            status = scratch.withCMethod(.request(request)) { id, decoded in writer.appendMethod(channel: 1, id: id, decoded: decoded) }
            return status == AMQP_STATUS_OK.rawValue
        }
        guard status == AMQP_STATUS_OK.rawValue else { return "a checked request was not encoded: status \(status)" }
        let received: [UInt8]
        switch written {
        case .failure(let problem): return problem.description
        case .success(let bytes): received = bytes
        }
        guard let state = amqp_new_connection() else { return "amqp_new_connection failed" }
        defer { amqp_destroy_connection(state) }
        var frame = amqp_frame_t()
        let consumed = received.withUnsafeBytes { raw in
            amqp_handle_input(state, amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress)), &frame)
        }
        guard consumed == received.count, Int32(frame.frame_type) == AMQP_FRAME_METHOD, received.count <= frameMax else {
            return "a request of \(received.count) bytes read back as \(consumed) bytes of frame type \(frame.frame_type)"
        }
        let method = frame.payload.method
        let table: amqp_table_t
        switch method.id {
        case AMQP_EXCHANGE_DECLARE_METHOD: table = method.decoded!.assumingMemoryBound(to: amqp_exchange_declare_t.self).pointee.arguments
        case AMQP_EXCHANGE_BIND_METHOD: table = method.decoded!.assumingMemoryBound(to: amqp_exchange_bind_t.self).pointee.arguments
        case AMQP_QUEUE_DECLARE_METHOD: table = method.decoded!.assumingMemoryBound(to: amqp_queue_declare_t.self).pointee.arguments
        case AMQP_QUEUE_BIND_METHOD: table = method.decoded!.assumingMemoryBound(to: amqp_queue_bind_t.self).pointee.arguments
        case AMQP_QUEUE_UNBIND_METHOD: table = method.decoded!.assumingMemoryBound(to: amqp_queue_unbind_t.self).pointee.arguments
        default: return "a request read back as method \(method.id)"
        }
        guard let again = try? RabbitMQFieldTable(cTable: table) else { return "a request's arguments read back too deep" }
        return identical(arguments, again).map { "a request's arguments came back different: \($0)" }
    }

    private struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    /// A frame writer for `frameMax` on one end of a socket pair: `append` fills it (false:
    /// it refused), then everything it wrote is read from the other end. `publishes`: how
    /// many the writer must count written.
    private static func throughSocket(
        frameMax: Int, publishes expected: Int, _ append: (FrameWriter) -> Bool
    ) -> Result<[UInt8], Problem> {
        var descriptors: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &descriptors) == 0 else { return .failure(Problem(description: "socketpair failed")) }
        defer {
            close(descriptors[0])
            close(descriptors[1])
        }
        for descriptor in descriptors { _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK) }
        let writer = FrameWriter(socket: descriptors[0], frameMax: frameMax)
        guard append(writer) else { return .success([]) }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var publishes = 0
        var rounds = 0
        while true {
            rounds += 1
            guard rounds < 10_000 else { return .failure(Problem(description: "the writer made no progress")) }
            switch writer.write(publishes: &publishes) {
            case .failed(let status): return .failure(Problem(description: "writing failed: \(status)"))
            case .done, .wouldBlock, .needsInput: break  // needsInput: TLS only
            }
            let count = chunk.withUnsafeMutableBytes { recv(descriptors[1], $0.baseAddress, $0.count, 0) }
            if count > 0 { received += chunk[..<count] }
            if writer.isEmpty, count <= 0 { break }
        }
        guard publishes == expected else { return .failure(Problem(description: "\(publishes) publishes counted written")) }
        return .success(received)
    }

    private static func readPublish(
        _ bytes: UnsafeRawBufferPointer, properties: RabbitMQProperties, body: [UInt8], returnTag: Bool, frameMax: Int
    ) -> String? {
        guard let state = amqp_new_connection() else { return "amqp_new_connection failed" }
        defer { amqp_destroy_connection(state) }
        var remaining = bytes
        var frames = 0
        var receivedBody: [UInt8] = []
        var bodySize = -1
        while !remaining.isEmpty {
            var frame = amqp_frame_t()
            let consumed = amqp_handle_input(
                state, amqp_bytes_t(len: remaining.count, bytes: UnsafeMutableRawPointer(mutating: remaining.baseAddress)), &frame)
            guard consumed > 0 else { return "rabbitmq-c refused frame \(frames) of a publish: \(consumed)" }
            remaining = UnsafeRawBufferPointer(rebasing: remaining[Int(consumed)...])
            guard frame.frame_type != 0 else { continue }
            frames += 1
            // The reader takes a frame's bytes in one call after its 7-byte header.
            switch (frames, Int32(frame.frame_type)) {
            case (1, AMQP_FRAME_METHOD):
                guard frame.payload.method.id == AMQP_BASIC_PUBLISH_METHOD else { return "the first frame is method \(frame.payload.method.id)" }
            case (2, AMQP_FRAME_HEADER):
                let header = frame.payload.properties
                bodySize = Int(header.body_size)
                guard header.class_id == AMQP_BASIC_CLASS, 7 + 12 + header.raw.len + 1 <= frameMax else {
                    return "content header of class \(header.class_id), \(header.raw.len) bytes of properties"
                }
                var cached = RabbitMQProperties()
                var flags: amqp_flags_t = 0
                var decoded: RabbitMQProperties
                do {
                    decoded = try RabbitMQProperties.contentHeader(classID: header.class_id, decoded: header.decoded, cached: &cached, flags: &flags)
                        ?? RabbitMQProperties()
                } catch {
                    return "the written properties do not decode: \(error)"
                }
                if returnTag {
                    guard decoded.headers?[Unconfirmed.returnTagHeader] == .int64(1 << 40) else { return "no return tag in \(decoded)" }
                    decoded.headers?[Unconfirmed.returnTagHeader] = nil
                    if properties.headers == nil, decoded.headers?.isEmpty == true { decoded.headers = nil }
                }
                if let difference = identical(properties, decoded) { return "written properties came back different: \(difference)" }
            case (3..., AMQP_FRAME_BODY):
                let fragment = frame.payload.body_fragment
                guard fragment.len > 0, 8 + fragment.len <= frameMax else { return "a body frame of \(fragment.len) bytes" }
                receivedBody += UnsafeRawBufferPointer(start: fragment.bytes, count: fragment.len)
            default:
                return "frame \(frames) has type \(frame.frame_type)"
            }
            amqp_maybe_release_buffers_on_channel(state, frame.channel)
        }
        guard bodySize == body.count, receivedBody == body else {
            return "a body of \(body.count) bytes came back as \(receivedBody.count) (announced \(bodySize))"
        }
        return nil
    }

    // MARK: Round trips

    /// Encodes `table` from Swift, decodes it with rabbitmq-c and converts it back.
    private static func reencodes(_ table: RabbitMQFieldTable) -> String? {
        // A key that is not valid UTF-8 is read with replacement characters, which can make it
        // longer than a short string: refused on the way out (publish and requests check).
        guard !table.measured().longKey else { return nil }
        let scratch = ScratchPool()
        var cTable = scratch.table(table)
        let expected = table.encodedSize
        var buffer = [UInt8](repeating: 0, count: expected + 16)
        return buffer.withUnsafeMutableBytes { raw -> String? in
            var written = 0
            let status = amqp_encode_table(amqp_bytes_t(len: raw.count, bytes: raw.baseAddress), &cTable, &written)
            guard status == AMQP_STATUS_OK.rawValue else { return "amqp_encode_table refused a table: \(status)" }
            guard written == expected else { return "encodedSize is \(expected) but rabbitmq-c wrote \(written)" }
            let pool = ScratchPool()
            var decoded = amqp_table_t()
            var offset = 0
            let decodeStatus = amqp_decode_table(amqp_bytes_t(len: written, bytes: raw.baseAddress), pool.pool, &decoded, &offset)
            guard decodeStatus == AMQP_STATUS_OK.rawValue, offset == written else {
                return "rabbitmq-c cannot decode what it encoded from Swift: \(decodeStatus), \(offset) of \(written)"
            }
            guard let again = try? RabbitMQFieldTable(cTable: decoded) else { return "a re-encoded table is nested too deep" }
            return identical(table, again).map { "a table came back different: \($0)" }
        }
    }

    /// Encodes `properties` from Swift (as a TLS publish does), decodes them with rabbitmq-c
    /// and converts them back.
    private static func reencodes(_ properties: RabbitMQProperties) -> String? {
        // What the publish path refuses (short strings and keys over 255 bytes, which a
        // decoded string that was not UTF-8 can become) is not encoded.
        let message = OutboundMessage(body: [], exchange: "", routingKey: "", properties: properties, mandatory: false)
        do {
            try message.validate()
            try message.validateHeaders { Int(Int32.max) }
        } catch {
            return error.code == .invalidConfiguration ? nil : "properties were refused with \(error)"
        }
        let scratch = ScratchPool()
        var c = scratch.properties(properties)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024 + (properties.headers?.encodedSize ?? 0))
        return buffer.withUnsafeMutableBytes { raw -> String? in
            let length = amqp_encode_properties(UInt16(AMQP_BASIC_CLASS), &c, amqp_bytes_t(len: raw.count, bytes: raw.baseAddress))
            guard length >= 0 else { return "amqp_encode_properties refused properties: \(length)" }
            let pool = ScratchPool()
            var decoded: UnsafeMutableRawPointer?
            let status = amqp_decode_properties(UInt16(AMQP_BASIC_CLASS), pool.pool, amqp_bytes_t(len: Int(length), bytes: raw.baseAddress), &decoded)
            guard status == AMQP_STATUS_OK.rawValue, let decoded else { return "re-encoded properties do not decode: \(status)" }
            guard let again = try? RabbitMQProperties(cProperties: decoded.assumingMemoryBound(to: amqp_basic_properties_t.self).pointee) else {
                return "re-encoded properties are nested too deep"
            }
            return identical(properties, again).map { "properties came back different: \($0)" }
        }
    }

    // MARK: Comparing

    /// Equality with floating-point values compared bit for bit (a NaN travels as itself).
    private static func identical(_ a: RabbitMQProperties, _ b: RabbitMQProperties) -> String? {
        var bareA = a
        var bareB = b
        bareA.headers = nil
        bareB.headers = nil
        guard bareA == bareB else { return "\(a) != \(b)" }
        switch (a.headers, b.headers) {
        case (nil, nil): return nil
        case (let x?, let y?): return identical(x, y)
        default: return "headers \(String(describing: a.headers)) != \(String(describing: b.headers))"
        }
    }

    private static func identical(_ a: RabbitMQFieldTable, _ b: RabbitMQFieldTable) -> String? {
        guard a.count == b.count else { return "\(a.count) entries != \(b.count)" }
        for (x, y) in zip(a.entries, b.entries) {
            guard x.key == y.key else { return "key \(x.key.debugDescription) != \(y.key.debugDescription)" }
            if let difference = identical(x.value, y.value) { return "\(x.key.debugDescription): \(difference)" }
        }
        return nil
    }

    private static func identical(_ a: RabbitMQFieldValue, _ b: RabbitMQFieldValue) -> String? {
        switch (a, b) {
        case (.float(let x), .float(let y)): return x.bitPattern == y.bitPattern ? nil : "\(x) != \(y)"
        case (.double(let x), .double(let y)): return x.bitPattern == y.bitPattern ? nil : "\(x) != \(y)"
        case (.table(let x), .table(let y)): return identical(x, y)
        case (.array(let x), .array(let y)):
            guard x.count == y.count else { return "\(x.count) elements != \(y.count)" }
            for (index, (p, q)) in zip(x, y).enumerated() {
                if let difference = identical(p, q) { return "[\(index)]: \(difference)" }
            }
            return nil
        default: return a == b ? nil : "\(a) != \(b)"
        }
    }
}
