/// Any JSON value: what an envelope's metadata holds when another language wrote it
/// (Python's `dict[str, Any]`, a JavaScript object).
///
/// Literals build one directly, so `["tenant": "acme", "attempt": 3, "tags": ["a"]]` is a
/// `[String: RabbitMQJSONValue]`. The accessors (``stringValue``, ``intValue``, ...) return nil
/// for any other kind, so reading an entry of an expected kind takes one optional chain.
///
/// Integers that fit in `Int64` stay exact (`.integer`); any other number is a `.double`.
/// A `.double` that is not finite cannot be written as JSON: encoding it throws.
public enum RabbitMQJSONValue: Sendable, Hashable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number that reads as an exact `Int64` (Python's `int`, within 64 bits).
    case integer(Int64)
    /// Any other number.
    case double(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([RabbitMQJSONValue])
    /// An object.
    case object([String: RabbitMQJSONValue])

    /// The string, when this is a string.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The integer, when this is an integer (or a double with an exact integer value in range).
    public var intValue: Int64? {
        switch self {
        case .integer(let value): value
        case .double(let value): Int64(exactly: value)
        default: nil
        }
    }

    /// The number, when this is an integer or a double.
    public var doubleValue: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .double(let value): value
        default: nil
        }
    }

    /// The boolean, when this is a boolean.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The elements, when this is an array.
    public var arrayValue: [RabbitMQJSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// The members, when this is an object.
    public var objectValue: [String: RabbitMQJSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// Whether this is `null`.
    public var isNull: Bool { self == .null }
}

extension RabbitMQJSONValue: Codable {
    /// Reads any JSON value: booleans first, then integers (exact), then doubles, so `3`
    /// stays an integer and `0.5` a double.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([RabbitMQJSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: RabbitMQJSONValue].self))
        }
    }

    /// Writes the value; a `.double` that is not finite throws `EncodingError.invalidValue`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .double(let value):
            guard value.isFinite else {
                throw EncodingError.invalidValue(
                    value, .init(codingPath: encoder.codingPath, debugDescription: "\(value) is not a JSON number"))
            }
            try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension RabbitMQJSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    // The literal initializers: `"a"`, `1`, `0.5`, `true`, `["a", 1]`, `["k": 1]`, `nil`.
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: RabbitMQJSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, RabbitMQJSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
    }
    public init(nilLiteral: ()) { self = .null }
}
