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
    init(decodedEntries: [Entry]) {
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
    /// The size of the table in AMQP's wire encoding (its 4-byte length included), as
    /// rabbitmq-c encodes it: used to refuse a message whose headers cannot fit in a frame.
    var encodedSize: Int {
        4 + entries.reduce(0) { $0 + 1 + Swift.min($1.key.utf8.count, 255) + $1.value.encodedSize }
    }
}

extension RabbitMQFieldValue {
    /// The encoded size of the value, its one-byte kind included.
    var encodedSize: Int {
        switch self {
        case .bool, .int8, .uint8: 2
        case .int16, .uint16: 3
        case .int32, .uint32, .float: 5
        case .int64, .double, .timestamp: 9
        case .decimal: 6
        case .string(let value): 5 + value.utf8.count
        case .bytes(let value): 5 + value.count
        case .table(let value): 1 + value.encodedSize
        case .array(let values): 5 + values.reduce(0) { $0 + $1.encodedSize }
        case .void: 1
        }
    }
}
