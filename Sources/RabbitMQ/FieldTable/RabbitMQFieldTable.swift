/// An AMQP field table: string keys to ``RabbitMQFieldValue``s, in insertion order.
///
/// Used for message headers, queue and exchange arguments, binding and consumer arguments.
/// Keys are unique: setting an existing key replaces its value in place.
///
/// ```swift
/// var arguments: RabbitMQFieldTable = ["x-queue-type": "quorum"]
/// arguments["x-max-length"] = 10_000
/// ```
public struct RabbitMQFieldTable: Sendable, Hashable {
    /// One key and its value.
    public struct Entry: Sendable, Hashable {
        /// The key (an AMQP short string: at most 255 bytes of UTF-8).
        public var key: String
        /// The value.
        public var value: RabbitMQFieldValue

        /// Creates an entry.
        public init(key: String, value: RabbitMQFieldValue) {
            self.key = key
            self.value = value
        }
    }

    /// The entries in order.
    public private(set) var entries: [Entry]

    /// An empty table.
    public init() { entries = [] }

    /// A table from key-value pairs; a repeated key keeps its last value.
    public init<S: Sequence>(_ pairs: S) where S.Element == (String, RabbitMQFieldValue) {
        entries = []
        for (key, value) in pairs { self[key] = value }
    }

    /// Entries read from the wire, in order; a repeated key keeps its last value, at the
    /// place of its first occurrence (as assigning through the subscript would).
    init(decodedEntries: [Entry], mayRepeatKeys: Bool = true) {
        guard mayRepeatKeys else {
            entries = decodedEntries
            return
        }
        guard decodedEntries.count <= Self.pairwiseKeyCheckLimit else {
            entries = Self.merging(largeTable: decodedEntries)
            return
        }
        var entries = decodedEntries
        var index = 1
        while index < entries.count {
            let key = entries[index].key
            if let first = entries[..<index].firstIndex(where: { $0.key == key }) {
                entries[first].value = entries[index].value
                entries.remove(at: index)
            } else {
                index += 1
            }
        }
        self.entries = entries
    }

    /// Up to this many entries, repeated keys are looked for pair by pair; above, through a
    /// dictionary, so that a peer's table of thousands of entries costs linear time on the
    /// I/O thread, not quadratic.
    static let pairwiseKeyCheckLimit = 32

    /// The merge of ``init(decodedEntries:mayRepeatKeys:)`` for a large table: the same result (a repeated
    /// key keeps its last value at the place of its first occurrence), in linear time.
    private static func merging(largeTable decoded: [Entry]) -> [Entry] {
        var firstIndex: [String: Int] = [:]
        firstIndex.reserveCapacity(decoded.count)
        var entries: [Entry] = []
        entries.reserveCapacity(decoded.count)
        for entry in decoded {
            if let index = firstIndex[entry.key] {
                entries[index].value = entry.value
            } else {
                firstIndex[entry.key] = entries.count
                entries.append(entry)
            }
        }
        return entries
    }

    /// Whether the table has no entries.
    public var isEmpty: Bool { entries.isEmpty }

    /// The number of entries.
    public var count: Int { entries.count }

    /// The value for `key`; assigning `nil` removes the entry.
    public subscript(key: String) -> RabbitMQFieldValue? {
        get { entries.first { $0.key == key }?.value }
        set {
            let index = entries.firstIndex { $0.key == key }
            switch (index, newValue) {
            case (let index?, let value?): entries[index].value = value
            case (let index?, nil): entries.remove(at: index)
            case (nil, let value?): entries.append(Entry(key: key, value: value))
            case (nil, nil): break
            }
        }
    }
}

extension RabbitMQFieldTable: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, RabbitMQFieldValue)...) {
        self.init(elements)
    }
}

extension RabbitMQFieldTable: Sequence {
    public func makeIterator() -> IndexingIterator<[Entry]> { entries.makeIterator() }
}

extension RabbitMQFieldTable {
    /// How deep tables and arrays may nest, counting this table as 1. Deeper ones are
    /// refused with a typed error on the way out (they would be encoded by recursion on the
    /// connection's I/O thread) and rejected on the way in (as rabbitmq-c 0.14 and later do).
    public static let maxDepth = 100

    /// The size of the table in AMQP's wire encoding (its 4-byte length included), as
    /// rabbitmq-c encodes it: used to refuse a message whose headers cannot fit in a frame.
    var encodedSize: Int { measured().size }

    /// Its encoded size, how deep it nests, and whether a key (anywhere inside) is longer
    /// than AMQP's 255 bytes; the walk stops (depth `maxDepth + 1`) as soon as it is too
    /// deep, so it never recurses further than that.
    func measured(depth: Int = 1) -> (size: Int, depth: Int, longKey: Bool) {
        guard depth <= Self.maxDepth else { return (0, depth, false) }
        var size = 4
        var deepest = depth
        var longKey = false
        for entry in entries {
            let value = entry.value.measured(depth: depth)
            let keyLength = entry.key.utf8.count
            longKey = longKey || keyLength > 255 || value.longKey
            size += 1 + Swift.min(keyLength, 255) + value.size
            deepest = Swift.max(deepest, value.depth)
            if deepest > Self.maxDepth { break }
        }
        return (size, deepest, longKey)
    }

    /// A table key is an AMQP short string: at most 255 bytes.
    static func longKeyError(_ what: String) -> RabbitMQError {
        RabbitMQError(code: .invalidConfiguration, scope: .none, message: "the \(what) have a key longer than AMQP's 255 bytes")
    }
}

extension RabbitMQFieldValue {
    /// The encoded size of the value, its one-byte kind included.
    var encodedSize: Int { measured(depth: 1).size }

    /// Size, depth, and whether a key inside is too long; `depth` is that of the table or
    /// array holding the value.
    func measured(depth: Int) -> (size: Int, depth: Int, longKey: Bool) {
        switch self {
        case .bool, .int8, .uint8: return (2, depth, false)
        case .int16, .uint16: return (3, depth, false)
        case .int32, .uint32, .float: return (5, depth, false)
        case .int64, .double, .timestamp: return (9, depth, false)
        case .decimal: return (6, depth, false)
        case .string(let value): return (5 + value.utf8.count, depth, false)
        case .bytes(let value): return (5 + value.count, depth, false)
        case .table(let value):
            let inner = value.measured(depth: depth + 1)
            return (1 + inner.size, inner.depth, inner.longKey)
        case .array(let values):
            guard depth + 1 <= RabbitMQFieldTable.maxDepth else { return (0, depth + 1, false) }
            var size = 5
            var deepest = depth + 1
            var longKey = false
            for value in values {
                let inner = value.measured(depth: depth + 1)
                size += inner.size
                longKey = longKey || inner.longKey
                deepest = Swift.max(deepest, inner.depth)
                if deepest > RabbitMQFieldTable.maxDepth { break }
            }
            return (size, deepest, longKey)
        case .void: return (1, depth, false)
        }
    }
}
