import RabbitMQ

/// A request as an ``RabbitMQRPCServer`` handler sees it. The server acknowledges it and
/// sends the reply; the handler only computes the reply body.
public struct RabbitMQRPCRequest: Sendable {
    /// The request body.
    public var body: [UInt8]
    /// The request's properties (correlation id, reply-to, content type, headers...).
    public var properties: RabbitMQProperties
    /// Whether the broker delivered this request before (a server died while handling it).
    public var redelivered: Bool

    /// Creates a request (for testing handlers).
    public init(body: [UInt8], properties: RabbitMQProperties = .init(), redelivered: Bool = false) {
        self.body = body
        self.properties = properties
        self.redelivered = redelivered
    }

    /// The body decoded as UTF-8 (invalid sequences replaced).
    public var bodyString: String { String(decoding: body, as: UTF8.self) }
}
