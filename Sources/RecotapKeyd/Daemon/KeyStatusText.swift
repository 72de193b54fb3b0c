import Foundation

/// The one-line summary used for systemd's `STATUS=` and the start-up log line,
/// e.g. "key 3fa2c1d09e7b valid, checked 40 s ago".
public enum KeyStatusText {
    public static func describe(active: KeyRecord?, spoolDirectory: String, now: Date) -> String {
        guard let active else {
            return "no key yet: drop one into \(spoolDirectory)"
        }
        switch active.state {
        case .valid:
            if let verified = active.lastVerifiedAt {
                return "key \(active.fingerprint) valid, checked \(age(from: verified, to: now)) ago"
            }
            return "key \(active.fingerprint) valid"
        case .unverified:
            return "key \(active.fingerprint) not yet verified"
        case .invalid:
            let since = active.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
            return "key \(active.fingerprint) INVALID\(since): drop a new key into \(spoolDirectory)"
        }
    }

    static func age(from start: Date, to end: Date) -> String {
        let seconds = max(0, Int(end.timeIntervalSince(start)))
        switch seconds {
        case ..<120: return "\(seconds) s"
        case ..<7200: return "\(seconds / 60) min"
        case ..<172_800: return "\(seconds / 3600) h"
        default: return "\(seconds / 86_400) d"
        }
    }
}
