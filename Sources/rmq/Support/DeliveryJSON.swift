import Foundation
import RabbitMQ

/// The line `rmq consume` writes for a delivery:
/// `{"exchange", "routingKey", "redelivered", "properties": {...}, "body"}`.
enum DeliveryJSON {
    static func line(for delivery: RabbitMQDelivery) -> String {
        JSONValue.object([
            "exchange": .string(delivery.exchange),
            "routingKey": .string(delivery.routingKey),
            "redelivered": .bool(delivery.redelivered),
            "properties": properties(delivery.properties),
            "body": body(delivery.body),
        ]).serialized
    }

    /// Only the properties that are set, in the AMQP order.
    static func properties(_ p: RabbitMQProperties) -> JSONValue {
        var members: [JSONValue.Member] = []
        func add(_ key: String, _ value: JSONValue?) {
            if let value { members.append(.init(key: key, value: value)) }
        }
        add("contentType", p.contentType.map(JSONValue.string))
        add("contentEncoding", p.contentEncoding.map(JSONValue.string))
        add("deliveryMode", p.deliveryMode.map { .int(Int64($0.rawValue)) })
        add("priority", p.priority.map { .int(Int64($0)) })
        add("correlationId", p.correlationID.map(JSONValue.string))
        add("replyTo", p.replyTo.map(JSONValue.string))
        add("expiration", p.expiration.map(JSONValue.string))
        add("messageId", p.messageID.map(JSONValue.string))
        add("timestamp", p.timestamp.map { .int(Int64(clamping: $0)) })
        add("type", p.type.map(JSONValue.string))
        add("userId", p.userID.map(JSONValue.string))
        add("appId", p.appID.map(JSONValue.string))
        add("headers", p.headers.map(JSONValue.init))
        return .object(members)
    }

    /// A JSON string when the body is valid UTF-8, else `{"base64": "..."}`.
    static func body(_ bytes: [UInt8]) -> JSONValue {
        if let text = String(validating: bytes, as: UTF8.self) { return .string(text) }
        return .object(["base64": .string(Data(bytes).base64EncodedString())])
    }
}
