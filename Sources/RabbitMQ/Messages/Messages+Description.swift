// Readable descriptions for the message types whose fields live in a copy-on-write box
// (the default reflection would print only the box).

extension RabbitMQProperties: CustomStringConvertible {
    /// The set properties only, for example
    /// `RabbitMQProperties(contentType: "application/json", deliveryMode: persistent)`.
    public var description: String {
        var parts: [String] = []
        func add(_ name: String, _ value: String?) {
            if let value { parts.append("\(name): \(String(reflecting: value))") }
        }
        add("contentType", contentType)
        add("contentEncoding", contentEncoding)
        if let headers {
            let entries = headers.map { "\(String(reflecting: $0.key)): \($0.value)" }
            parts.append("headers: [\(entries.joined(separator: ", "))]")
        }
        if let deliveryMode { parts.append("deliveryMode: \(deliveryMode)") }
        if let priority { parts.append("priority: \(priority)") }
        add("correlationID", correlationID)
        add("replyTo", replyTo)
        add("expiration", expiration)
        add("messageID", messageID)
        if let timestamp { parts.append("timestamp: \(timestamp)") }
        add("type", type)
        add("userID", userID)
        add("appID", appID)
        add("clusterID", clusterID)
        return "RabbitMQProperties(\(parts.joined(separator: ", ")))"
    }
}

extension RabbitMQDelivery: CustomStringConvertible {
    /// The envelope, the set properties and the body's size (never its bytes, which may be
    /// large or confidential).
    public var description: String {
        var parts = [
            "deliveryTag: \(deliveryTag)", "exchange: \(String(reflecting: exchange))",
            "routingKey: \(String(reflecting: routingKey))", "redelivered: \(redelivered)",
        ]
        if !consumerTag.isEmpty { parts.append("consumerTag: \(String(reflecting: consumerTag))") }
        if let messageCount { parts.append("messageCount: \(messageCount)") }
        parts.append("properties: \(properties)")
        parts.append("body: \(body.count) bytes")
        return "RabbitMQDelivery(\(parts.joined(separator: ", ")))"
    }
}
