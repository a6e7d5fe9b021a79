/// The payload the demo sends through the exchange and retry patterns.
struct DemoOrder: Codable, Sendable, Equatable {
    var id: String
    var region: String
    var cents: Int
}
