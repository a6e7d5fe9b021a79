import RabbitMQ

/// Reads the fuzzer's bytes as choices: numbers, lengths, strings, and Swift field values
/// and properties built from them. Past the end every read gives zeros, so any input makes
/// some value.
struct FuzzInput {
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[Swift.min(position, bytes.count)...]) }
    var isExhausted: Bool { position >= bytes.count }

    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        var value = T.zero
        for _ in 0..<MemoryLayout<T>.size { value = value << 8 | T(truncatingIfNeeded: byte()) }
        return value
    }

    mutating func raw(count: Int) -> [UInt8] {
        let available = Swift.min(count, bytes.count - Swift.min(position, bytes.count))
        defer { position += available }
        return Array(bytes[position..<position + available])
    }

    /// Up to `limit` bytes (the length read first) as a String: invalid UTF-8 becomes
    /// replacement characters, as any Swift String would hold.
    mutating func string(limit: Int) -> String {
        let length = Int(integer(UInt16.self)) % (limit + 1)
        return String(decoding: raw(count: length), as: UTF8.self)
    }

    /// A short string, now and then longer than AMQP's 255 bytes (refused with an error).
    mutating func shortString() -> String {
        string(limit: byte() == 0xFF ? 300 : 255)
    }

    mutating func optionalShortString() -> String? { bool() ? shortString() : nil }

    /// A table of up to 16 entries; `depth` counts this table as 1. Deep nesting costs one
    /// byte a level, so the fuzzer reaches ``RabbitMQFieldTable/maxDepth`` and beyond.
    mutating func table(depth: Int = 1) -> RabbitMQFieldTable {
        var table = RabbitMQFieldTable()
        let count = Int(byte() % 17)
        for _ in 0..<count where !isExhausted {
            table[shortString()] = value(depth: depth)
        }
        return table
    }

    mutating func value(depth: Int) -> RabbitMQFieldValue {
        // Past the guard on depth only the nesting kinds go on: a tower of tables or arrays
        // one byte per level. 110 keeps the stack of the recursive encoder shallow.
        let kind = byte() % 18
        switch kind {
        case 0: return .bool(bool())
        case 1: return .int8(integer())
        case 2: return .uint8(integer())
        case 3: return .int16(integer())
        case 4: return .uint16(integer())
        case 5: return .int32(integer())
        case 6: return .uint32(integer())
        case 7: return .int64(integer())
        case 8: return .float(Float(bitPattern: integer()))
        case 9: return .double(Double(bitPattern: integer()))
        case 10: return .decimal(RabbitMQDecimal(scale: integer(), value: integer()))
        case 11: return .string(string(limit: 1024))
        case 12: return .bytes(raw(count: Int(integer(UInt16.self)) % 1025))
        case 13: return .timestamp(integer())
        case 14: return .void
        case 15 where depth < 110: return .table(table(depth: depth + 1))
        case 16 where depth < 110:
            var values: [RabbitMQFieldValue] = []
            for _ in 0..<Int(byte() % 9) where !isExhausted { values.append(value(depth: depth + 1)) }
            return .array(values)
        case 17 where depth < 110:
            // A tower: one byte says how high (to past the limit), each level a table or an array.
            let height = Int(byte() % 112)
            var inner: RabbitMQFieldValue = .int64(Int64(height))
            for level in 0..<height { inner = level % 2 == 0 ? .table(["k": inner]) : .array([inner]) }
            return inner
        default: return .void
        }
    }

    mutating func properties() -> RabbitMQProperties {
        var p = RabbitMQProperties(
            contentType: optionalShortString(), contentEncoding: optionalShortString(), headers: bool() ? table() : nil,
            deliveryMode: bool() ? RabbitMQProperties.DeliveryMode(rawValue: byte()) : nil, priority: bool() ? byte() : nil,
            correlationID: optionalShortString(), replyTo: optionalShortString(), expiration: optionalShortString(),
            messageID: optionalShortString(), timestamp: bool() ? integer() : nil, type: optionalShortString(),
            userID: optionalShortString(), appID: optionalShortString())
        if bool() { p.clusterID = shortString() }
        return p
    }
}
