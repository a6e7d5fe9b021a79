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
