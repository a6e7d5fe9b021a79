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
