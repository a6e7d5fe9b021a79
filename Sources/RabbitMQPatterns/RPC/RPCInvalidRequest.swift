/// A request body that did not decode as a typed handler's request type.
struct RPCInvalidRequest: Error {
    var reason: String
}
