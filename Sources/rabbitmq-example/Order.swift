/// An order placed with the service: what the topic events, the price quotes and the
/// fulfilment jobs carry.
struct Order: Codable, Sendable {
    /// `order-<run>-<n>`: the run's random id, then the order's number in the run.
    var id: String
    var sku: String
    var quantity: Int
    /// The quoted total, in cents (0 until quoted).
    var totalCents: Int = 0
}
