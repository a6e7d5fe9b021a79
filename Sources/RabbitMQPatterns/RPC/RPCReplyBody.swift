/// A handler's reply before the server publishes it.
struct RPCReplyBody: Sendable {
    var body: [UInt8]
    var contentType: String?
}
