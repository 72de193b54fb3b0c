import Logging

/// The validated configuration of one daemon run: built once at start, never mutated,
/// passed down to every component. See README "Configuration" and `config/keyd.yaml`.
public struct KeydConfiguration: Sendable, Equatable {
    public struct API: Sendable, Equatable {
        /// The API root, e.g. `https://eapi.recotap.com/api/v1` (no trailing slash).
        public var baseURL: String
        public var timeout: Duration
        /// Extra trust anchors (PEM); `nil` when not configured.
        public var caFile: String?
        /// `nil` means: take `https_proxy`/`HTTPS_PROXY` from the environment.
        public var proxy: String?
        public var allowInsecureHTTP: Bool
    }

    public struct Check: Sendable, Equatable {
        public var interval: Duration
        public var jitter: Double
        public var confirmDelay: Duration
        public var backoffMin: Duration
        public var backoffMax: Duration
        public var reportMinInterval: Duration
        public var reminderInterval: Duration
    }

    public struct Spool: Sendable, Equatable {
        public var directory: String
        public var verifyBeforeActivate: Bool
    }

    public struct Store: Sendable, Equatable {
        public var path: String
    }

    public struct Sockets: Sendable, Equatable {
        public var api: String
        public var credential: String
        /// The generation file (README "Consumers"); `nil`: none.
        public var generationFile: String?
        /// Permission bits for both socket files, e.g. `0o660`.
        public var mode: UInt32
    }

    /// Users and groups, by name, as written in the configuration.
    public struct Principals: Sendable, Equatable {
        public var users: [String]
        public var groups: [String]
    }

    public struct Access: Sendable, Equatable {
        public var readers: Principals
        public var admins: Principals
        public var units: [String]
    }

    /// README "Monitoring".
    public struct Metrics: Sendable, Equatable {
        /// Who may read `GET /metrics` on `keyd.sock` besides readers and admins.
        public var readers: Principals
        /// The TCP listener serving only `/metrics`; `nil`: none.
        public var listen: MetricsListenAddress?
        /// Whether `listen` may be other than a loopback address.
        public var allowRemote: Bool
        /// The node_exporter textfile; `nil`: none.
        public var textfile: String?
    }

    /// The key source (README "Fleets").
    public struct Source: Sendable, Equatable {
        /// The argv of the command whose standard output is the key; empty: no source.
        public var command: [String]
        /// How often the command also runs while the key works; `nil`: never.
        public var interval: Duration?
        public var timeout: Duration
        /// `NAME=VALUE` entries added to the command's minimal environment.
        public var environment: [String]
    }

    public enum LogTarget: String, Sendable, Equatable, CaseIterable {
        case journal, console, auto
    }

    public struct Log: Sendable, Equatable {
        public var target: LogTarget
        public var level: Logger.Level
    }

    public var api: API
    public var check: Check
    public var spool: Spool
    public var store: Store
    public var sockets: Sockets
    public var access: Access
    public var metrics: Metrics
    public var source: Source
    public var log: Log

    /// The production defaults of README "Configuration".
    public static let defaults = KeydConfiguration(
        api: API(
            baseURL: "https://eapi.recotap.com/api/v1",
            timeout: .seconds(10),
            caFile: nil,
            proxy: nil,
            allowInsecureHTTP: false
        ),
        check: Check(
            interval: .seconds(300),
            jitter: 0.1,
            confirmDelay: .seconds(2),
            backoffMin: .seconds(15),
            backoffMax: .seconds(300),
            reportMinInterval: .seconds(10),
            reminderInterval: .seconds(3600)
        ),
        spool: Spool(directory: "/var/spool/recotap-keyd", verifyBeforeActivate: true),
        store: Store(path: "/var/lib/recotap-keyd/keyd.sqlite3"),
        sockets: Sockets(
            api: "/run/recotap-keyd/keyd.sock",
            credential: "/run/recotap-keyd/credential.sock",
            generationFile: "/run/recotap-keyd/generation",
            mode: 0o660
        ),
        access: Access(
            readers: Principals(users: [], groups: ["recotap-key"]),
            admins: Principals(users: [], groups: ["recotap-key-admin"]),
            units: []
        ),
        metrics: Metrics(readers: Principals(users: [], groups: []), listen: nil, allowRemote: false, textfile: nil),
        source: Source(command: [], interval: nil, timeout: .seconds(30), environment: []),
        log: Log(target: .auto, level: .info)
    )

    /// The file read when `--config` is not given. A missing default file is not an
    /// error (every key has a default); a missing file named by `--config` is.
    public static let defaultPath = "/etc/recotap-keyd/keyd.yaml"
}
