/// A failure of the harness itself (as opposed to a scenario's measurement).
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
