import CRabbitMQ
import Glibc

// Field kinds as the UInt8 stored in amqp_field_value_t.kind.
private let kindBool = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
private let kindI8 = UInt8(AMQP_FIELD_KIND_I8.rawValue)
private let kindU8 = UInt8(AMQP_FIELD_KIND_U8.rawValue)
private let kindI16 = UInt8(AMQP_FIELD_KIND_I16.rawValue)
private let kindU16 = UInt8(AMQP_FIELD_KIND_U16.rawValue)
private let kindI32 = UInt8(AMQP_FIELD_KIND_I32.rawValue)
private let kindU32 = UInt8(AMQP_FIELD_KIND_U32.rawValue)
private let kindI64 = UInt8(AMQP_FIELD_KIND_I64.rawValue)
private let kindU64 = UInt8(AMQP_FIELD_KIND_U64.rawValue)
private let kindF32 = UInt8(AMQP_FIELD_KIND_F32.rawValue)
private let kindF64 = UInt8(AMQP_FIELD_KIND_F64.rawValue)
private let kindDecimal = UInt8(AMQP_FIELD_KIND_DECIMAL.rawValue)
private let kindUTF8 = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
private let kindArray = UInt8(AMQP_FIELD_KIND_ARRAY.rawValue)
private let kindTimestamp = UInt8(AMQP_FIELD_KIND_TIMESTAMP.rawValue)
private let kindTable = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
private let kindVoid = UInt8(AMQP_FIELD_KIND_VOID.rawValue)
private let kindBytes = UInt8(AMQP_FIELD_KIND_BYTES.rawValue)

extension ScratchPool {
    /// Builds the C form of `table` in this pool; valid until the next ``recycle()``.
    func table(_ table: RabbitMQFieldTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = allocate(table.count * MemoryLayout<amqp_table_entry_t>.stride)
            .bindMemory(to: amqp_table_entry_t.self, capacity: table.count)
        for (index, entry) in table.entries.enumerated() {
            (entries + index).initialize(to: amqp_table_entry_t(key: bytes(entry.key), value: fieldValue(entry.value)))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    /// `table` with the return tag of a mandatory confirm-mode publish added (see
    /// ``Unconfirmed/returnTagHeader``).
    func table(_ table: RabbitMQFieldTable, returnTag: UInt64?) -> amqp_table_t {
        guard let returnTag else { return self.table(table) }
        let count = table.count + 1
        let entries = allocate(count * MemoryLayout<amqp_table_entry_t>.stride)
            .bindMemory(to: amqp_table_entry_t.self, capacity: count)
        for (index, entry) in table.entries.enumerated() {
            (entries + index).initialize(to: amqp_table_entry_t(key: bytes(entry.key), value: fieldValue(entry.value)))
        }
        (entries + table.count).initialize(
            to: amqp_table_entry_t(key: bytes(Unconfirmed.returnTagHeader), value: fieldValue(.int64(Int64(truncatingIfNeeded: returnTag)))))
        return amqp_table_t(num_entries: Int32(count), entries: entries)
    }

    func fieldValue(_ value: RabbitMQFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .bool(let v):
            field.kind = kindBool
            field.value.boolean = v ? 1 : 0
        case .int8(let v):
            field.kind = kindI8
            field.value.i8 = v
        case .uint8(let v):
            field.kind = kindU8
            field.value.u8 = v
        case .int16(let v):
            field.kind = kindI16
            field.value.i16 = v
        case .uint16(let v):
            field.kind = kindU16
            field.value.u16 = v
        case .int32(let v):
            field.kind = kindI32
            field.value.i32 = v
        case .uint32(let v):
            field.kind = kindU32
            field.value.u32 = v
        case .int64(let v):
            field.kind = kindI64
            field.value.i64 = v
        case .float(let v):
            field.kind = kindF32
            field.value.f32 = v
        case .double(let v):
            field.kind = kindF64
            field.value.f64 = v
        case .decimal(let v):
            field.kind = kindDecimal
            field.value.decimal = amqp_decimal_t(decimals: v.scale, value: UInt32(bitPattern: v.value))
        case .string(let v):
            field.kind = kindUTF8
            field.value.bytes = bytes(v)
        case .bytes(let v):
            field.kind = kindBytes
            field.value.bytes = bytes(v)
        case .timestamp(let v):
            field.kind = kindTimestamp
            field.value.u64 = v
        case .table(let v):
            field.kind = kindTable
            field.value.table = table(v)
        case .array(let values):
            field.kind = kindArray
            if values.isEmpty {
                field.value.array = amqp_array_t(num_entries: 0, entries: nil)
            } else {
                let entries = allocate(values.count * MemoryLayout<amqp_field_value_t>.stride)
                    .bindMemory(to: amqp_field_value_t.self, capacity: values.count)
                for (index, element) in values.enumerated() {
                    (entries + index).initialize(to: fieldValue(element))
                }
                field.value.array = amqp_array_t(num_entries: Int32(values.count), entries: entries)
            }
        case .void:
            field.kind = kindVoid
        }
        return field
    }
}

/// A decoded table or array nested deeper than ``RabbitMQFieldTable/maxDepth``.
struct FieldTableTooDeep: Error {
    var error: RabbitMQError { Self.error }

    static var error: RabbitMQError {
        RabbitMQError(
            code: .protocolError, scope: .none,
            message: "a field table nests tables and arrays more than \(RabbitMQFieldTable.maxDepth) deep")
    }
}

extension RabbitMQFieldTable {
    /// Copies a C table (from a decoded frame) into a Swift value; refuses one nested deeper
    /// than ``maxDepth`` instead of recursing on (the I/O thread's) stack.
    init(cTable: amqp_table_t, depth: Int = 1) throws(FieldTableTooDeep) {
        guard depth <= Self.maxDepth else { throw FieldTableTooDeep() }
        self.init()
        guard cTable.num_entries > 0, let entries = cTable.entries else { return }
        let count = Int(cTable.num_entries)
        var decoded: [Entry] = []
        decoded.reserveCapacity(count)
        for index in 0..<count {
            let entry = entries[index]
            decoded.append(Entry(key: String(amqpBytes: entry.key), value: try RabbitMQFieldValue(cValue: entry.value, depth: depth)))
        }
        // A repeated key is rare: look for one in the C bytes (lengths first, then memcmp),
        // and only then merge the Swift entries (string comparisons).
        self.init(decodedEntries: decoded, mayRepeatKeys: Self.mayRepeatKeys(entries, count: count))
    }

    /// Whether two keys may be equal as Strings: equal bytes, or any byte outside ASCII
    /// (String equality is canonical equivalence, and invalid UTF-8 is repaired, so keys with
    /// different bytes can compare equal; then the Swift entries decide).
    private static func mayRepeatKeys(_ entries: UnsafeMutablePointer<amqp_table_entry_t>, count: Int) -> Bool {
        guard count > 1 else { return false }
        // Pairwise comparisons are for headers-sized tables; a big one (a peer's frame can
        // hold some 26,000 entries) goes to the merge, which hashes.
        guard count <= RabbitMQFieldTable.pairwiseKeyCheckLimit else { return true }
        for index in 0..<count {
            let key = entries[index].key
            guard key.len > 0, let bytes = key.bytes else { continue }
            if !UnsafeRawBufferPointer(start: bytes, count: key.len).allSatisfy({ $0 < 0x80 }) { return true }
        }
        for later in 1..<count {
            let key = entries[later].key
            for earlier in 0..<later {
                let other = entries[earlier].key
                if other.len == key.len && (key.len == 0 || memcmp(other.bytes, key.bytes, key.len) == 0) { return true }
            }
        }
        return false
    }
}

extension RabbitMQFieldValue {
    /// `depth`: how deep the table or array holding this value is.
    init(cValue field: amqp_field_value_t, depth: Int) throws(FieldTableTooDeep) {
        switch field.kind {
        case kindBool: self = .bool(field.value.boolean != 0)
        case kindI8: self = .int8(field.value.i8)
        case kindU8: self = .uint8(field.value.u8)
        case kindI16: self = .int16(field.value.i16)
        case kindU16: self = .uint16(field.value.u16)
        case kindI32: self = .int32(field.value.i32)
        case kindU32: self = .uint32(field.value.u32)
        case kindI64: self = .int64(field.value.i64)
        // RabbitMQ never sends 'L'; read it as signed, like the broker would.
        case kindU64: self = .int64(Int64(bitPattern: field.value.u64))
        case kindF32: self = .float(field.value.f32)
        case kindF64: self = .double(field.value.f64)
        case kindDecimal:
            self = .decimal(
                RabbitMQDecimal(scale: field.value.decimal.decimals, value: Int32(bitPattern: field.value.decimal.value)))
        case kindUTF8:
            // Straight from rabbitmq-c's buffer: no intermediate array unless it is not UTF-8.
            let bytes = field.value.bytes
            let raw = UnsafeBufferPointer(start: bytes.bytes?.assumingMemoryBound(to: UInt8.self), count: bytes.len)
            // ASCII (the usual case) is valid UTF-8: skip the validating decoder, which also
            // looks up generic metadata every time.
            if raw.allSatisfy({ $0 < 0x80 }) {
                self = .string(String(decoding: raw, as: UTF8.self))
            } else if let string = String(validating: raw, as: UTF8.self) {
                self = .string(string)
            } else {
                self = .bytes(Array(raw))
            }
        case kindBytes: self = .bytes([UInt8](amqpBytes: field.value.bytes))
        case kindTimestamp: self = .timestamp(field.value.u64)
        case kindTable: self = .table(try RabbitMQFieldTable(cTable: field.value.table, depth: depth + 1))
        case kindArray:
            guard depth + 1 <= RabbitMQFieldTable.maxDepth else { throw FieldTableTooDeep() }
            var values: [RabbitMQFieldValue] = []
            let array = field.value.array
            if array.num_entries > 0, let entries = array.entries {
                values.reserveCapacity(Int(array.num_entries))
                for index in 0..<Int(array.num_entries) {
                    values.append(try RabbitMQFieldValue(cValue: entries[index], depth: depth + 1))
                }
            }
            self = .array(values)
        default: self = .void
        }
    }
}
