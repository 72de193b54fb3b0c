/// Every configuration key the daemon knows, in one table. The loader refuses any
/// key not listed here, and derives the environment variable and the flag of each
/// key from its name, so the three sources can never drift apart.
public struct ConfigurationKey: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case string, path, bool, double, duration, stringArray
    }

    /// Dotted name as in the YAML file: `check.backoff_min`.
    public let name: String
    public let kind: Kind

    /// `RECOTAP_KEYD_CHECK_BACKOFF_MIN`
    public var environmentVariable: String {
        "RECOTAP_KEYD_" + name.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    /// `--check-backoff-min`
    public var flag: String {
        "--" + name.map { $0 == "." || $0 == "_" ? "-" : String($0) }.joined()
    }

    public static let all: [ConfigurationKey] = [
        .init(name: "api.base_url", kind: .string),
        .init(name: "api.timeout", kind: .duration),
        .init(name: "api.ca_file", kind: .path),
        .init(name: "api.proxy", kind: .string),
        .init(name: "api.allow_insecure_http", kind: .bool),
        .init(name: "check.interval", kind: .duration),
        .init(name: "check.jitter", kind: .double),
        .init(name: "check.confirm_delay", kind: .duration),
        .init(name: "check.backoff_min", kind: .duration),
        .init(name: "check.backoff_max", kind: .duration),
        .init(name: "check.report_min_interval", kind: .duration),
        .init(name: "check.reminder_interval", kind: .duration),
        .init(name: "spool.directory", kind: .path),
        .init(name: "spool.verify_before_activate", kind: .bool),
        .init(name: "store.path", kind: .path),
        .init(name: "sockets.api", kind: .path),
        .init(name: "sockets.credential", kind: .path),
        .init(name: "sockets.mode", kind: .string),
        .init(name: "access.readers.users", kind: .stringArray),
        .init(name: "access.readers.groups", kind: .stringArray),
        .init(name: "access.admins.users", kind: .stringArray),
        .init(name: "access.admins.groups", kind: .stringArray),
        .init(name: "access.units", kind: .stringArray),
        .init(name: "log.target", kind: .string),
        .init(name: "log.level", kind: .string),
    ]

    public static func named(_ name: String) -> ConfigurationKey? {
        all.first { $0.name == name }
    }
}
