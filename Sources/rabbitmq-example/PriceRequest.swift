/// The pricing RPC's request: the price of `quantity` items of `sku`, answered with a
/// ``PriceQuote``.
struct PriceRequest: Codable, Sendable {
    var sku: String
    var quantity: Int
}
