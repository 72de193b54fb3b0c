import Foundation

/// Durations as written in the configuration: a number and a unit, optionally
/// repeated — `500ms`, `30s`, `5m`, `1h`, `1h30m`, `2d`. A bare number is refused:
/// "300" could mean seconds or milliseconds, and guessing wrong is silent.
public enum DurationParsing {
    public static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        var total: Duration = .zero
        var chars = Substring(trimmed)
        while !chars.isEmpty {
            let digits = chars.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !digits.isEmpty, let number = Double(digits), number.isFinite else { return nil }
            chars = chars.dropFirst(digits.count)
            let unit = chars.prefix { $0.isASCII && $0.isLetter }
            guard !unit.isEmpty else { return nil }
            chars = chars.dropFirst(unit.count)
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            case "d": scale = 86400
            default: return nil
            }
            // Saturating: "99999999999999999999d" is a duration, out of every range,
            // and the validator says so; it must not trap here.
            guard let part = Saturating.duration(seconds: number * scale) else { return nil }
            total += part
        }
        return total
    }

    /// The shortest spelling of a duration in the configuration's own units.
    public static func format(_ duration: Duration) -> String {
        let ms = duration.milliseconds
        if ms % 86_400_000 == 0, ms != 0 { return "\(ms / 86_400_000)d" }
        if ms % 3_600_000 == 0, ms != 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0, ms != 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }
}

extension Duration {
    /// Whole milliseconds, rounded toward zero.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Seconds as a `Double`, for arithmetic such as jitter and backoff.
    public var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
