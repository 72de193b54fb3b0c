/// The schedule's arithmetic: the jittered interval and exponential backoff with full
/// jitter. Pure, with the random source passed in, so tests pin it.
public struct CheckTiming: Sendable {
    public let check: KeydConfiguration.Check
    /// Uniform in [0, 1).
    public let random: @Sendable () -> Double

    public init(check: KeydConfiguration.Check, random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        self.check = check
        self.random = random
    }

    /// `check.interval` spread by ±`check.jitter`.
    public func nextInterval() -> Duration {
        let factor = 1 + check.jitter * (2 * random() - 1)
        return Saturating.duration(seconds: check.interval.seconds * factor) ?? check.interval
    }

    /// The wait before retry number `failures` (1 = after the first failure): a random
    /// point between `backoff_min` and `min(backoff_max, backoff_min · 2^(failures-1))`.
    /// Full jitter spreads the retries of many hosts that failed together.
    public func backoff(failures: Int) -> Duration {
        let minimum = Double(check.backoffMin.milliseconds)
        let maximum = Double(check.backoffMax.milliseconds)
        let exponent = Double(max(0, min(failures - 1, 40)))
        let ceiling = min(maximum, minimum * pow2(exponent))
        return Saturating.duration(seconds: (minimum + (ceiling - minimum) * random()) / 1000) ?? check.backoffMin
    }

    /// After a 429: what the API asked for, but never below `backoff_min` nor above
    /// `backoff_max`; without `Retry-After`, the ordinary backoff.
    public func afterRateLimit(retryAfter: Duration?, failures: Int) -> Duration {
        guard let retryAfter else { return backoff(failures: failures) }
        return min(max(retryAfter, check.backoffMin), check.backoffMax)
    }

    private func pow2(_ exponent: Double) -> Double {
        var result = 1.0
        for _ in 0..<Int(exponent) { result *= 2 }
        return result
    }
}
