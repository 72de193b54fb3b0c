import Foundation
import Logging

/// Every configuration key the daemon knows, in one table: its name, what it accepts
/// and where its value goes in ``KeydConfiguration``. The loader refuses any key not
/// listed here and derives each key's environment variable and flag from its name, so
/// the three sources can never drift apart; the validator is this table applied in
/// order, then the few checks that relate two keys; the test of the annotated
/// `config/keyd.yaml` reads each key's range from here.
public struct ConfigurationKey: Sendable {
    public enum Kind: Sendable, Hashable {
        case string, path, bool, double, duration, stringArray
    }

    /// Dotted name as in the YAML file: `check.backoff_min`.
    public let name: String
    public let kind: Kind
    /// The values allowed beyond the kind, as refusals and `config/keyd.yaml` state
    /// them ("1s to 5m"); `nil` when the kind says it all.
    public let range: String?
    /// The key's value in a configuration, as a file would spell it (`5m`, `[a, b]`,
    /// `""`): the defaults in `recotap-keyd.yaml(5)`.
    public let show: @Sendable (KeydConfiguration) -> String
    /// Checks a value read from a source and stores it into the configuration.
    let apply: @Sendable (_ value: ConfigurationSetting, _ config: inout KeydConfiguration) throws(ConfigurationError) -> Void

    /// `RECOTAP_KEYD_CHECK_BACKOFF_MIN`
    public var environmentVariable: String {
        "RECOTAP_KEYD_" + name.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    /// `--check-backoff-min`
    public var flag: String {
        "--" + name.map { $0 == "." || $0 == "_" ? "-" : String($0) }.joined()
    }

    public static let all: [ConfigurationKey] = [
        .init("api.base_url", .string, range: "an http(s) URL", show: { $0.api.baseURL }) { value, config throws(ConfigurationError) in
            config.api.baseURL = try value.baseURL()
        },
        .duration("api.timeout", \.api.timeout, in: .seconds(1) ... .seconds(300)),
        .init("api.ca_file", .path, range: nil, show: { $0.api.caFile ?? "" }) { value, config throws(ConfigurationError) in
            config.api.caFile = try value.string.isEmpty ? nil : value.path()
        },
        .init("api.proxy", .string, range: "an http:// URL", show: { $0.api.proxy ?? "" }) { value, config throws(ConfigurationError) in
            config.api.proxy = try value.proxy()
        },
        .bool("api.allow_insecure_http", \.api.allowInsecureHTTP),
        .duration("check.interval", \.check.interval, in: .seconds(10) ... .seconds(86_400)),
        .init("check.jitter", .double, range: "0 to 0.5", show: { String($0.check.jitter) }) { value, config throws(ConfigurationError) in
            config.check.jitter = try value.double(in: 0 ... 0.5)
        },
        .duration("check.confirm_delay", \.check.confirmDelay, in: .zero ... .seconds(300)),
        .duration("check.backoff_min", \.check.backoffMin, in: .seconds(1) ... .seconds(3600)),
        .duration("check.backoff_max", \.check.backoffMax, in: .seconds(1) ... .seconds(86_400)),
        .duration("check.report_min_interval", \.check.reportMinInterval, in: .zero ... .seconds(3600)),
        .duration("check.reminder_interval", \.check.reminderInterval, in: .seconds(60) ... .seconds(7 * 86_400)),
        .path("spool.directory", \.spool.directory),
        .bool("spool.verify_before_activate", \.spool.verifyBeforeActivate),
        .path("store.path", \.store.path),
        .socketPath("sockets.api", \.sockets.api),
        .socketPath("sockets.credential", \.sockets.credential),
        .init("sockets.generation_file", .path, range: "a path, or \"\" for none", show: { $0.sockets.generationFile ?? "" }) { value, config throws(ConfigurationError) in
            config.sockets.generationFile = try value.string.isEmpty ? nil : value.path()
        },
        .init("sockets.mode", .string, range: "0600 to 0777", show: { "0" + String($0.sockets.mode, radix: 8) }) { value, config throws(ConfigurationError) in
            config.sockets.mode = try value.socketMode()
        },
        .names("access.readers.users", \.access.readers.users),
        .names("access.readers.groups", \.access.readers.groups),
        .names("access.admins.users", \.access.admins.users),
        .names("access.admins.groups", \.access.admins.groups),
        .init("access.units", .stringArray, range: "unit names", show: { list($0.access.units) }) { value, config throws(ConfigurationError) in
            config.access.units = try value.units()
        },
        .names("metrics.readers.users", \.metrics.readers.users),
        .names("metrics.readers.groups", \.metrics.readers.groups),
        .init("metrics.listen", .string, range: "an IP address and port, e.g. 127.0.0.1:9851, or \"\" for none", show: { $0.metrics.listen?.description ?? "" }) {
            value, config throws(ConfigurationError) in
            guard !value.string.isEmpty else { config.metrics.listen = nil; return }
            guard let address = MetricsListenAddress(value.string) else {
                throw value.refused(
                    "\"\(value.string)\" is not an IP address and port (write 127.0.0.1:9851 or [::1]:9851)")
            }
            config.metrics.listen = address
        },
        .bool("metrics.allow_remote", \.metrics.allowRemote),
        .init("metrics.textfile", .path, range: "a path ending in .prom, or \"\" for none", show: { $0.metrics.textfile ?? "" }) {
            value, config throws(ConfigurationError) in
            guard !value.string.isEmpty else { config.metrics.textfile = nil; return }
            let path = try value.path()
            guard path.hasSuffix(".prom") else {
                throw value.refused("\(path) must end in .prom (node_exporter's textfile collector reads only *.prom)")
            }
            config.metrics.textfile = path
        },
        .init("source.command", .stringArray, range: "an argv list: the program and its arguments; [] for none", show: { list($0.source.command) }) {
            value, config throws(ConfigurationError) in
            config.source.command = try value.command()
        },
        .init("source.interval", .duration, range: "0 (off) or 1m to 7d", show: { $0.source.interval.map(DurationParsing.format) ?? "0" }) {
            value, config throws(ConfigurationError) in
            if value.string == "0" || DurationParsing.parse(value.string) == .zero { config.source.interval = nil; return }
            let interval = try value.duration(in: .seconds(60) ... .seconds(7 * 86_400), allowed: "0 (off) or 1m to 7d")
            config.source.interval = interval
        },
        .duration("source.timeout", \.source.timeout, in: .seconds(1) ... .seconds(600)),
        .init("source.environment", .stringArray, range: "NAME=VALUE entries, or NAME to pass the daemon's own on", show: { list($0.source.environment) }) {
            value, config throws(ConfigurationError) in
            config.source.environment = try value.environmentEntries()
        },
        .init("log.target", .string, range: "journal, console or auto", show: { $0.log.target.rawValue }) { value, config throws(ConfigurationError) in
            guard let target = KeydConfiguration.LogTarget(rawValue: value.string) else {
                throw value.refused("\"\(value.string)\" is not one of journal, console, auto")
            }
            config.log.target = target
        },
        .init("log.level", .string, range: Logger.Level.allCases.map(\.rawValue).joined(separator: ", "), show: { $0.log.level.rawValue }) {
            value, config throws(ConfigurationError) in
            guard let level = Logger.Level(rawValue: value.string) else {
                let allowed = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                throw value.refused("\"\(value.string)\" is not one of \(allowed)")
            }
            config.log.level = level
        },
    ]

    public static func named(_ name: String) -> ConfigurationKey? {
        all.first { $0.name == name }
    }

    init(
        _ name: String, _ kind: Kind, range: String?, show: @escaping @Sendable (KeydConfiguration) -> String,
        apply: @escaping @Sendable (ConfigurationSetting, inout KeydConfiguration) throws(ConfigurationError) -> Void
    ) {
        self.name = name
        self.kind = kind
        self.range = range
        self.show = show
        self.apply = apply
    }

    static func list(_ names: [String]) -> String { "[" + names.joined(separator: ", ") + "]" }

    static func duration(
        _ name: String, _ field: WritableKeyPath<KeydConfiguration, Duration> & Sendable, in range: ClosedRange<Duration>
    ) -> ConfigurationKey {
        let allowed = "\(DurationParsing.format(range.lowerBound)) to \(DurationParsing.format(range.upperBound))"
        return ConfigurationKey(name, .duration, range: allowed, show: { DurationParsing.format($0[keyPath: field]) }) {
            value, config throws(ConfigurationError) in
            config[keyPath: field] = try value.duration(in: range, allowed: allowed)
        }
    }

    static func bool(_ name: String, _ field: WritableKeyPath<KeydConfiguration, Bool> & Sendable) -> ConfigurationKey {
        ConfigurationKey(name, .bool, range: nil, show: { String($0[keyPath: field]) }) { value, config in
            if case .bool(let flag) = value.value { config[keyPath: field] = flag }
        }
    }

    static func path(_ name: String, _ field: WritableKeyPath<KeydConfiguration, String> & Sendable) -> ConfigurationKey {
        ConfigurationKey(name, .path, range: nil, show: { $0[keyPath: field] }) { value, config throws(ConfigurationError) in
            config[keyPath: field] = try value.path()
        }
    }

    static func socketPath(_ name: String, _ field: WritableKeyPath<KeydConfiguration, String> & Sendable) -> ConfigurationKey {
        ConfigurationKey(name, .path, range: "at most 107 bytes", show: { $0[keyPath: field] }) {
            value, config throws(ConfigurationError) in
            let resolved = try value.path()
            // sun_path holds 108 bytes including the terminating NUL.
            guard resolved.utf8.count <= 107 else {
                throw value.refused("\(resolved) is \(resolved.utf8.count) bytes long; a Unix socket path may have at most 107")
            }
            config[keyPath: field] = resolved
        }
    }

    static func names(_ name: String, _ field: WritableKeyPath<KeydConfiguration, [String]> & Sendable) -> ConfigurationKey {
        ConfigurationKey(name, .stringArray, range: "user or group names", show: { list($0[keyPath: field]) }) {
            value, config throws(ConfigurationError) in
            config[keyPath: field] = try value.names()
        }
    }
}

/// A value one source gives a key, typed by the key's kind, and where it came from.
struct ConfigurationSetting: Sendable {
    enum Value: Sendable {
        case string(String)
        case bool(Bool)
        case double(Double)
        case strings([String])
    }

    var key: String
    var value: Value
    var origin: ConfigurationLoader.Source

    func refused(_ message: String) -> ConfigurationError {
        ConfigurationError(key: key, source: origin.description, message: message)
    }

    var string: String {
        if case .string(let text) = value { return text }
        return ""
    }
}
