import Foundation
import RabbitMQ

extension JSONValue {
    /// A header value as JSON. Types JSON lacks are tagged: timestamp `{"timestamp": seconds}`,
    /// byte array `{"bytes": "<base64>"}`, decimal `{"decimal": "12.34"}`; void is null.
    init(_ value: RabbitMQFieldValue) {
        switch value {
        case .bool(let value): self = .bool(value)
        case .int8(let value): self = .int(Int64(value))
        case .uint8(let value): self = .int(Int64(value))
        case .int16(let value): self = .int(Int64(value))
        case .uint16(let value): self = .int(Int64(value))
        case .int32(let value): self = .int(Int64(value))
        case .uint32(let value): self = .int(Int64(value))
        case .int64(let value): self = .int(value)
        case .float(let value): self = .double(Double(value))
        case .double(let value): self = .double(value)
        case .decimal(let value): self = .object(["decimal": .string(value.description)])
        case .string(let value): self = .string(value)
        case .bytes(let value): self = .object(["bytes": .string(Data(value).base64EncodedString())])
        case .timestamp(let value):
            self = .object(["timestamp": .int(Int64(clamping: value))])
        case .table(let table): self = JSONValue(table)
        case .array(let values): self = .array(values.map(JSONValue.init))
        case .void: self = .null
        }
    }

    /// A field table as a JSON object, entries in order.
    init(_ table: RabbitMQFieldTable) {
        self = .object(table.map { Member(key: $0.key, value: JSONValue($0.value)) })
    }

    /// This value as a header value: integers become 64-bit integers, other numbers doubles,
    /// objects tables, arrays arrays, null void.
    var fieldValue: RabbitMQFieldValue {
        switch self {
        case .null: .void
        case .bool(let value): .bool(value)
        case .int(let value): .int64(value)
        case .double(let value): .double(value)
        case .string(let value): .string(value)
        case .array(let values): .array(values.map(\.fieldValue))
        case .object(let members): .table(RabbitMQFieldTable(members.map { ($0.key, $0.value.fieldValue) }))
        }
    }
}
