import ArgumentParser

/// Durations given in seconds on the command line (`--timeout`, `--idle-timeout`).
enum Seconds {
    /// The longest accepted: about 31 years. Anything longer means "for ever" and would
    /// overflow a count of milliseconds (or nanoseconds) somewhere below; it is a usage error.
    static let maximum: Double = 1_000_000_000

    /// `seconds` as a Duration, or a usage error naming `option` when it is not a positive,
    /// finite number of seconds up to ``maximum``.
    static func duration(_ seconds: Double, option: String) throws -> Duration {
        guard seconds > 0, seconds <= maximum else {
            throw ValidationError("\(option) must be a positive number of seconds, at most \(Int(maximum))")
        }
        return .milliseconds(max(1, Int64((seconds * 1000).rounded())))
    }
}
