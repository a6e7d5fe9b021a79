/// The demo's RPC response.
struct PriceQuote: Codable, Sendable {
    var sku: String
    var cents: Int
}
