import Foundation

/// The one-line summary used for systemd's `STATUS=` and the start-up log line,
/// e.g. "key 3fa2c1d09e7b valid, checked 40 s ago; key added 12 d ago".
/// A key's age counts from when this daemon first took it (`added_at`).
public enum KeyStatusText {
    public static func describe(
        active: KeyRecord?, spoolDirectory: String, now: Date, degradedSince: Date? = nil, failureReason: String? = nil
    ) -> String {
        guard let active else {
            return "no key yet: drop one into \(spoolDirectory)"
        }
        return summary(active: active, spoolDirectory: spoolDirectory, now: now, degradedSince: degradedSince, failureReason: failureReason)
            + "; key added \(age(from: active.addedAt, to: now)) ago"
    }

    private static func summary(
        active: KeyRecord, spoolDirectory: String, now: Date, degradedSince: Date?, failureReason: String?
    ) -> String {
        let fingerprint = active.fingerprint
        if let why = active.secretUnavailable {
            return "key \(fingerprint) NOT SERVED: \(why)"
        }
        if active.state == .invalid {
            let since = active.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
            return "key \(fingerprint) INVALID\(since), waiting for a replacement in \(spoolDirectory)"
        }
        let keyPart: String
        switch (active.state, active.lastVerifiedAt) {
        case (.valid, .some(let verified)):
            keyPart = degradedSince == nil
                ? "key \(fingerprint) valid, checked \(age(from: verified, to: now)) ago"
                : "key \(fingerprint) valid (verified \(age(from: verified, to: now)) ago)"
        case (.valid, .none):
            keyPart = "key \(fingerprint) valid"
        default:
            keyPart = "key \(fingerprint) not yet verified"
        }
        guard let degradedSince else { return keyPart }
        let reason = failureReason.map { " (\($0))" } ?? ""
        return "\(keyPart); cannot reach the API for \(age(from: degradedSince, to: now))\(reason)"
    }

    /// Whole seconds from `start` to `end`, 0 if `start` is later.
    public static func seconds(from start: Date, to end: Date) -> Int64 {
        max(0, Saturating.int64(end.timeIntervalSince(start)) ?? 0)
    }

    public static func age(from start: Date, to end: Date) -> String {
        let seconds = max(0, Saturating.int(Saturating.int64(end.timeIntervalSince(start)) ?? 0))
        switch seconds {
        case ..<120: return "\(seconds) s"
        case ..<7200: return "\(seconds / 60) min"
        case ..<172_800: return "\(seconds / 3600) h"
        default: return "\(seconds / 86_400) d"
        }
    }
}
