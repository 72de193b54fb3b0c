/// Conversions for numbers that came from outside the daemon — a query parameter, a
/// `Retry-After` header, a duration in the configuration, `WATCHDOG_USEC`, a date the
/// API sent. Swift traps on an integer conversion that does not fit; a daemon any
/// local user can send bytes to must not. These never trap: a value too large for
/// the target saturates at its bound, and a value that is not a number (NaN) is
/// `nil`. Every conversion of outside data goes through here, not through `Int64(_:)`.
public enum Saturating {
    /// The largest `Double` below 2^63: `Int64(_:)` traps on anything at or above 2^63.
    private static let limit = 9_223_372_036_854_774_784.0

    /// `value` rounded toward zero, clamped to `Int64`; `nil` for NaN.
    public static func int64(_ value: Double) -> Int64? {
        guard !value.isNaN else { return nil }
        if value >= limit { return .max }
        if value <= -limit { return .min }
        return Int64(value)
    }

    /// `value` clamped to `Int64`.
    public static func int64(_ value: UInt64) -> Int64 { Int64(clamping: value) }

    /// `value` clamped to `Int`.
    public static func int(_ value: Int64) -> Int { Int(clamping: value) }

    /// Whole milliseconds of a duration given in seconds, rounded; saturates at about
    /// 292 million years either way; `nil` for NaN.
    public static func duration(seconds: Double) -> Duration? {
        int64((seconds * 1000).rounded()).map { .milliseconds($0) }
    }
}

extension Duration {
    /// `self` clamped to `range`.
    func clamped(to range: ClosedRange<Duration>) -> Duration {
        Swift.min(Swift.max(self, range.lowerBound), range.upperBound)
    }
}
