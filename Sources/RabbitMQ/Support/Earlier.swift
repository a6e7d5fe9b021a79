/// The earlier of two optional deadlines; nil when neither is set.
@inline(__always)
func earlier(_ a: ContinuousClock.Instant?, _ b: ContinuousClock.Instant?) -> ContinuousClock.Instant? {
    guard let a else { return b }
    guard let b else { return a }
    return a < b ? a : b
}
