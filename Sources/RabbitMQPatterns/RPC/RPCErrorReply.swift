import Foundation
import RabbitMQ

/// The reply an RPC server sends when its handler fails: the body
/// `{"error": "...", "success": false}` (the convention Python and Node RPC services use, so
/// any client can read it) and the header `x-rpc-error: true`, which is what
/// ``RabbitMQRPCClient`` goes by. A reply without the header is the handler's own answer,
/// whatever its body says: a typed reply may well carry `"success": false` of its own.
enum RPCErrorReply {
    /// The header that marks an error reply.
    static let header = "x-rpc-error"

    private struct Body: Codable {
        var error: String?
        var success: Bool
    }

    static func encode(_ message: String) -> [UInt8] {
        // Encoding a struct of a String and a Bool cannot fail.
        (try? Array(EnvelopeJSON.encoder().encode(Body(error: message, success: false))))
            ?? Array(#"{"success":false}"#.utf8)
    }

    /// The headers of an error reply.
    static var headers: RabbitMQFieldTable { [header: true] }

    /// The error text when `reply` is an error reply (it has the header), else nil.
    static func decode(_ reply: RabbitMQDelivery) -> String? {
        decode(reply.body, headers: reply.properties.headers)
    }

    /// The error text when a reply of `body` and `headers` is an error reply, else nil.
    static func decode(_ body: [UInt8], headers: RabbitMQFieldTable?) -> String? {
        guard case .bool(true)? = headers?[header] else { return nil }
        guard let reply = try? JSONDecoder().decode(Body.self, from: Data(body)) else {
            return "the server reported a failure"
        }
        return reply.error ?? "the server reported a failure"
    }
}
