/// The pricing RPC: a request for a SKU and quantity, and its answer.
struct PriceRequest: Codable, Sendable {
    var sku: String
    var quantity: Int
}

/// The answer to a ``PriceRequest``.
struct PriceQuote: Codable, Sendable {
    var sku: String
    var unitCents: Int
    var totalCents: Int

    /// The service's price list: deterministic, so that a test can check the totals.
    static func quote(_ request: PriceRequest) -> PriceQuote {
        let unitCents = 100 + request.sku.utf8.reduce(0) { $0 + Int($1) } % 900
        return PriceQuote(sku: request.sku, unitCents: unitCents, totalCents: unitCents * request.quantity)
    }
}
