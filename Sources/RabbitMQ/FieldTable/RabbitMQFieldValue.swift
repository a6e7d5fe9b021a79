/// One value in an AMQP field table or field array.
///
/// Covers every field type RabbitMQ reads and writes (RabbitMQ's errata to AMQP 0-9-1, which
/// rabbitmq-c follows: `s` is a signed 16-bit integer, `l` a signed 64-bit integer, and the
/// only string type inside tables is the long string `S`). Integer literals become `.int64`,
/// the type RabbitMQ itself uses for numbers in headers and arguments.
///
/// ```swift
/// let headers: RabbitMQFieldTable = ["x-retry-count": 2, "source": "billing", "urgent": true]
/// ```
public enum RabbitMQFieldValue: Sendable, Hashable {
    /// `t`
    case bool(Bool)
    /// `b`
    case int8(Int8)
    /// `B`
    case uint8(UInt8)
    /// `s` (RabbitMQ's errata; the 0-9-1 spec's short string is not used in tables)
    case int16(Int16)
    /// `u`
    case uint16(UInt16)
    /// `I`
    case int32(Int32)
    /// `i`
    case uint32(UInt32)
    /// `l`
    case int64(Int64)
    /// `f`
    case float(Float)
    /// `d`
    case double(Double)
    /// `D`
    case decimal(RabbitMQDecimal)
    /// `S`, a long string. A long string that is not valid UTF-8 is read as `.bytes`.
    case string(String)
    /// `x`, a byte array.
    case bytes([UInt8])
    /// `T`, seconds since the Unix epoch.
    case timestamp(UInt64)
    /// `F`, a nested table.
    case table(RabbitMQFieldTable)
    /// `A`, an array.
    case array([RabbitMQFieldValue])
    /// `V`, no value.
    case void
}

/// An AMQP decimal: `value × 10^-scale`.
public struct RabbitMQDecimal: Sendable, Hashable, CustomStringConvertible {
    /// The number of decimal digits after the point.
    public var scale: UInt8
    /// The unscaled value.
    public var value: Int32

    /// Creates `value × 10^-scale`; `RabbitMQDecimal(scale: 2, value: 1234)` is 12.34.
    public init(scale: UInt8, value: Int32) {
        self.scale = scale
        self.value = value
    }

    /// The decimal as text, for example `12.34` or `-0.5`.
    public var description: String {
        guard scale > 0 else { return String(value) }
        let negative = value < 0
        var digits = String(value.magnitude)
        let scale = Int(scale)
        if digits.count <= scale {
            digits = String(repeating: "0", count: scale - digits.count + 1) + digits
        }
        let split = digits.index(digits.endIndex, offsetBy: -scale)
        return (negative ? "-" : "") + digits[..<split] + "." + digits[split...]
    }
}

extension RabbitMQFieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByFloatLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int64(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: RabbitMQFieldValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, RabbitMQFieldValue)...) {
        self = .table(RabbitMQFieldTable(elements))
    }
    public init(nilLiteral: ()) { self = .void }
}

extension RabbitMQFieldValue {
    /// The value as a string, when it is one.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The value as an integer, when it is any integer type that fits in `Int64`.
    public var int64Value: Int64? {
        switch self {
        case .int8(let v): Int64(v)
        case .uint8(let v): Int64(v)
        case .int16(let v): Int64(v)
        case .uint16(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .int64(let v): v
        default: nil
        }
    }

    /// The value as a table, when it is one.
    public var tableValue: RabbitMQFieldTable? {
        if case .table(let value) = self { return value }
        return nil
    }
}
