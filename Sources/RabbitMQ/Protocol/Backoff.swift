/// Exponential back-off with jitter: the delays between reconnection attempts.
///
/// Pure: the random source is injected, so tests can pin it.
struct Backoff: Sendable {
    let initial: Duration
    let maximum: Duration
    let multiplier: Double
    let jitter: Double
    private(set) var attempt = 0

    init(_ recovery: RabbitMQConfiguration.Recovery) {
        initial = recovery.initialDelay
        maximum = recovery.maxDelay
        multiplier = max(1, recovery.multiplier)
        jitter = min(1, max(0, recovery.jitter))
    }

    /// The delay before the next attempt; `random` yields values in 0..<1.
    mutating func next(random: () -> Double) -> Duration {
        let exponent = Double(attempt)
        attempt += 1
        let base = min(initial.seconds * Double.pow(multiplier, exponent), maximum.seconds)
        let delay = base * (1 - jitter) + base * jitter * random()
        return .nanoseconds(Int64((delay * 1e9).rounded()))
    }

    mutating func reset() { attempt = 0 }
}

extension Duration {
    /// The duration in (fractional) seconds.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

extension Double {
    fileprivate static func pow(_ base: Double, _ exponent: Double) -> Double {
        var result = 1.0
        var remaining = Int(exponent)
        while remaining > 0 {
            result *= base
            remaining -= 1
            if result > 1e12 { break }
        }
        return result
    }
}
