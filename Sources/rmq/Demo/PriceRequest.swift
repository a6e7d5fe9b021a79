/// The demo's RPC request.
struct PriceRequest: Codable, Sendable {
    var sku: String
}
