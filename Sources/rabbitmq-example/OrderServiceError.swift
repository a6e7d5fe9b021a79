/// A configuration the service cannot start with.
struct OrderServiceError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
