import CRabbitMQ
import Testing

@testable import RabbitMQ

@Suite("Field tables through the C representation")
struct FieldTableTests {
    static let everyType: RabbitMQFieldTable = [
        "bool": .bool(true),
        "false": .bool(false),
        "i8": .int8(-8),
        "u8": .uint8(200),
        "i16": .int16(-16_000),
        "u16": .uint16(60_000),
        "i32": .int32(-2_000_000_000),
        "u32": .uint32(4_000_000_000),
        "i64": .int64(-9_000_000_000_000),
        "float": .float(1.5),
        "double": .double(-2.25e100),
        "decimal": .decimal(RabbitMQDecimal(scale: 2, value: 1234)),
        "string": .string("héllo wörld ✓"),
        "empty": .string(""),
        "bytes": .bytes([0, 1, 2, 255]),
        "timestamp": .timestamp(1_700_000_000),
        "void": .void,
        "array": .array([.int64(1), .string("two"), .array([.bool(false)]), .table(["k": .int32(3)])]),
        "emptyArray": .array([]),
        "table": .table([
            "nested": .table(["deeper": .array([.decimal(RabbitMQDecimal(scale: 1, value: -5)), .void])]),
            "n": .uint8(1),
        ]),
        "emptyTable": .table([:]),
    ]

    @Test func everyTypeRoundTripsThroughCStructures() throws {
        let pool = ScratchPool()
        let c = pool.table(Self.everyType)
        let back = try RabbitMQFieldTable(cTable: c)
        #expect(back == Self.everyType)
        #expect(back.entries.map(\.key) == Self.everyType.entries.map(\.key), "order is kept")
    }

    /// The connection empties its scratch pool after the login (an idle connection keeps no
    /// page of it): the pool builds tables again afterwards, on pages of its own.
    @Test func aScratchPoolEmptiedAfterUseBuildsTablesAgain() throws {
        let pool = ScratchPool()
        #expect(try RabbitMQFieldTable(cTable: pool.table(Self.everyType)) == Self.everyType)
        pool.empty()
        #expect(try RabbitMQFieldTable(cTable: pool.table(Self.everyType)) == Self.everyType)
        pool.empty()
        pool.empty()
        #expect(pool.bytes("after").len == 5)
    }

    @Test func aRepeatedKeyFromTheWireKeepsItsLastValueAtItsFirstPlace() throws {
        let pool = ScratchPool()
        let entries = pool.allocate(4 * MemoryLayout<amqp_table_entry_t>.stride)
            .bindMemory(to: amqp_table_entry_t.self, capacity: 4)
        for (index, (key, value)) in [("a", 1), ("b", 2), ("a", 3), ("c", 4)].enumerated() {
            (entries + index).initialize(
                to: amqp_table_entry_t(key: pool.bytes(key), value: pool.fieldValue(.int32(Int32(value)))))
        }
        let table = try RabbitMQFieldTable(cTable: amqp_table_t(num_entries: 4, entries: entries))
        #expect(table.entries.map(\.key) == ["a", "b", "c"])
        #expect(table["a"] == .int32(3))
    }

    @Test func aLargeTableFromTheWireMergesRepeatedKeysTheSameWay() throws {
        // Above the pairwise limit the merge hashes: same result, linear time.
        let pool = ScratchPool()
        let keys = (0..<40).map { "k\($0)" } + ["k5", "k39", "k0"]
        let entries = pool.allocate(keys.count * MemoryLayout<amqp_table_entry_t>.stride)
            .bindMemory(to: amqp_table_entry_t.self, capacity: keys.count)
        for (index, key) in keys.enumerated() {
            (entries + index).initialize(
                to: amqp_table_entry_t(key: pool.bytes(key), value: pool.fieldValue(.int32(Int32(index)))))
        }
        let table = try RabbitMQFieldTable(cTable: amqp_table_t(num_entries: Int32(keys.count), entries: entries))
        #expect(table.entries.map(\.key) == (0..<40).map { "k\($0)" })
        #expect(table["k5"] == .int32(40))
        #expect(table["k39"] == .int32(41))
        #expect(table["k0"] == .int32(42))
        #expect(table["k1"] == .int32(1))
    }

    @Test func keysWithDifferentBytesThatAreEqualStringsAreOneKey() throws {
        // "é" precomposed and as e + combining acute: different bytes, equal Strings.
        let pool = ScratchPool()
        let entries = pool.allocate(2 * MemoryLayout<amqp_table_entry_t>.stride)
            .bindMemory(to: amqp_table_entry_t.self, capacity: 2)
        for (index, (key, value)) in [("caf\u{E9}", 1), ("cafe\u{301}", 2)].enumerated() {
            (entries + index).initialize(
                to: amqp_table_entry_t(key: pool.bytes(key), value: pool.fieldValue(.int32(Int32(value)))))
        }
        let table = try RabbitMQFieldTable(cTable: amqp_table_t(num_entries: 2, entries: entries))
        #expect(table.count == 1)
        #expect(table["caf\u{E9}"] == .int32(2))
    }

    @Test func nonUTF8LongStringsBecomeBytes() throws {
        let pool = ScratchPool()
        var field = amqp_field_value_t()
        field.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
        field.value.bytes = pool.bytes([0x61, 0xFF, 0x62])
        #expect(try RabbitMQFieldValue(cValue: field, depth: 1) == .bytes([0x61, 0xFF, 0x62]))
        field.value.bytes = pool.bytes(Array("grüße".utf8))
        #expect(try RabbitMQFieldValue(cValue: field, depth: 1) == .string("grüße"))
    }

    @Test func encodedSizeIsWhatRabbitMQCWrites() {
        let pool = ScratchPool()
        for table in [Self.everyType, [:], ["k": .string(String(repeating: "z", count: 300))]] as [RabbitMQFieldTable] {
            var cTable = pool.table(table)
            var written = 0
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 65_536, alignment: 8)
            defer { buffer.deallocate() }
            #expect(amqp_encode_table(amqp_bytes_t(len: 65_536, bytes: buffer), &cTable, &written) == AMQP_STATUS_OK.rawValue)
            #expect(table.encodedSize == written)
        }
    }

    @Test func everyTypeRoundTripsThroughTheWireEncoding() throws {
        let pool = ScratchPool()
        var c = pool.table(Self.everyType)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var encodedLength = 0
        try buffer.withUnsafeMutableBytes { raw in
            var offset = 0
            let status = amqp_encode_table(amqp_bytes_t(len: raw.count, bytes: raw.baseAddress), &c, &offset)
            #expect(status == AMQP_STATUS_OK.rawValue)
            encodedLength = offset
            let decodePool = ScratchPool()
            var decoded = amqp_table_t()
            var readOffset = 0
            let decodeStatus = amqp_decode_table(
                amqp_bytes_t(len: offset, bytes: raw.baseAddress), decodePool.pool, &decoded, &readOffset)
            try #require(decodeStatus == AMQP_STATUS_OK.rawValue)
            #expect(readOffset == offset)
            #expect(try RabbitMQFieldTable(cTable: decoded) == Self.everyType)
        }
        #expect(encodedLength > 100)
    }

    @Test func propertiesRoundTripThroughC() throws {
        let pool = ScratchPool()
        var properties = RabbitMQProperties(
            contentType: "application/json", contentEncoding: "gzip", headers: Self.everyType,
            deliveryMode: .persistent, priority: 7, correlationID: "corr", replyTo: "reply-q", expiration: "60000",
            messageID: "id-1", timestamp: 1_700_000_001, type: "order.created", userID: "guest", appID: "tests")
        properties.clusterID = "c1"
        #expect(try RabbitMQProperties(cProperties: pool.properties(properties)) == properties)
        #expect(try RabbitMQProperties(cProperties: pool.properties(RabbitMQProperties())) == RabbitMQProperties())
    }

    @Test func decodedPropertiesAreSharedOnlyWhileEveryValueIsTheSame() throws {
        let pool = ScratchPool()
        var cached = RabbitMQProperties()
        var flags: amqp_flags_t = 0
        func decode(_ properties: RabbitMQProperties) throws -> RabbitMQProperties {
            defer { pool.recycle() }
            return try RabbitMQProperties.reusing(&cached, flags: &flags, for: pool.properties(properties))
        }
        var full = RabbitMQProperties(
            contentType: "application/json", contentEncoding: "identity", deliveryMode: .persistent, priority: 3,
            correlationID: "corr", replyTo: "replies", expiration: "60000", messageID: "id-1",
            timestamp: 1_700_000_001, type: "order.created", userID: "guest", appID: "orders")
        full.clusterID = "c1"
        let first = try decode(full)
        #expect(first == full)
        let second = try decode(full)
        #expect(second == full)
        #expect(second.storage === first.storage, "the same values share one box")

        // Every field changed in value (same flags), then one field dropped: each is a new value.
        var variants: [RabbitMQProperties] = []
        for change in 0..<15 {
            var changed = full
            switch change {
            case 0: changed.contentType = "application/jsoN"
            case 1: changed.contentEncoding = "gzip"
            case 2: changed.deliveryMode = .transient
            case 3: changed.priority = 4
            case 4: changed.correlationID = "corR"
            case 5: changed.replyTo = "replies2"
            case 6: changed.expiration = "60001"
            case 7: changed.messageID = "id-2"
            case 8: changed.timestamp = 1_700_000_002
            case 9: changed.type = "order.updated"
            case 10: changed.userID = "guesT"
            case 11: changed.appID = "orderS"
            case 12: changed.clusterID = "c2"
            case 13: changed.correlationID = ""
            default: changed.appID = nil
            }
            variants.append(changed)
        }
        for changed in variants {
            let decoded = try decode(changed)
            #expect(decoded == changed)
            #expect(decoded.storage !== first.storage)
            #expect(try decode(full) == full)
        }
        // Headers are never cached: equal values, separate boxes.
        let withHeaders = RabbitMQProperties(headers: ["event_type": .string("a.b.c")], deliveryMode: .persistent)
        let h1 = try decode(withHeaders)
        let h2 = try decode(withHeaders)
        #expect(h1 == withHeaders && h2 == withHeaders)
        #expect(h1.storage !== h2.storage)
        #expect(try decode(RabbitMQProperties()) == RabbitMQProperties())
    }

    @Test func manyRoundTripsReuseThePool() {
        // A recycled pool keeps its pages: converting the same table again and again must not
        // grow memory; a leak here would show under valgrind or ASan in CI runs of this test.
        let pool = ScratchPool()
        for _ in 0..<10_000 {
            let c = pool.table(Self.everyType)
            #expect(c.num_entries == Int32(Self.everyType.count))
            pool.recycle()
        }
    }

    @Test func tableSemantics() {
        var table: RabbitMQFieldTable = ["a": 1, "b": "x"]
        table["a"] = 2
        table["c"] = true
        table["b"] = nil
        #expect(table.entries.map(\.key) == ["a", "c"])
        #expect(table["a"] == .int64(2))
        #expect(table["a"]?.int64Value == 2)
        #expect(RabbitMQFieldTable([("k", 1), ("k", 2)])["k"] == .int64(2))
    }

    @Test func decimalDescription() {
        #expect(RabbitMQDecimal(scale: 2, value: 1234).description == "12.34")
        #expect(RabbitMQDecimal(scale: 3, value: 5).description == "0.005")
        #expect(RabbitMQDecimal(scale: 1, value: -5).description == "-0.5")
        #expect(RabbitMQDecimal(scale: 0, value: 42).description == "42")
    }
}
