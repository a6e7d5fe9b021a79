import Foundation

/// The reply an RPC server sends when its handler fails: `{"error": "...", "success": false}`,
/// the convention Python and Node RPC services use, so any client can recognise it.
enum RPCErrorReply {
    private struct Body: Codable {
        var error: String?
        var success: Bool
    }

    static func encode(_ message: String) -> [UInt8] {
        // Encoding a struct of a String and a Bool cannot fail.
        (try? Array(EnvelopeJSON.encoder().encode(Body(error: message, success: false))))
            ?? Array(#"{"success":false}"#.utf8)
    }

    /// The error text when `body` is an error reply (a JSON object whose `success` is the
    /// boolean false), else nil. Cheap for ordinary replies: only a body that starts with `{`
    /// and mentions "success" is parsed.
    static func decode(_ body: [UInt8]) -> String? {
        guard let first = body.first(where: { !Self.isWhitespace($0) }), first == UInt8(ascii: "{"),
            body.count < 1 << 20, containsSuccess(body),
            let reply = try? JSONDecoder().decode(Body.self, from: Data(body)), !reply.success
        else { return nil }
        return reply.error ?? "the server reported a failure"
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }

    private static func containsSuccess(_ body: [UInt8]) -> Bool {
        let needle = Array(#""success""#.utf8)
        guard body.count >= needle.count else { return false }
        for start in 0...(body.count - needle.count) where body[start] == needle[0] {
            if body[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}
