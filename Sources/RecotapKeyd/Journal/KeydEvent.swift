import Logging

/// The events operators alert on (README, "Logging and the journal"). Their `MESSAGE_ID`s are a public
/// contract — the catalog, alert rules and `journalctl MESSAGE_ID=…` depend on them —
/// and live here and nowhere else in the code.
public enum KeydEvent: String, Sendable, CaseIterable {
    case keyInvalidated = "KEY_INVALIDATED"
    case keyStillInvalid = "KEY_STILL_INVALID"
    case keyActivated = "KEY_ACTIVATED"
    case spoolRejected = "SPOOL_REJECTED"
    case checkDegraded = "CHECK_DEGRADED"
    case checkRecovered = "CHECK_RECOVERED"
    case accessDenied = "ACCESS_DENIED"
    case apiRequestError = "API_REQUEST_ERROR"
    case daemonLifecycle = "DAEMON_LIFECYCLE"
    case consumerReported401 = "CONSUMER_REPORTED_401"
    case accessDeniedSuppressed = "ACCESS_DENIED_SUPPRESSED"
    case keyRolledBack = "KEY_ROLLED_BACK"
    case consumerRestarted = "CONSUMER_RESTARTED"
    case sourceFetchFailed = "SOURCE_FETCH_FAILED"
    case sourceNoNewKey = "SOURCE_NO_NEW_KEY"

    /// 128-bit id, 32 lowercase hex digits, as `journalctl MESSAGE_ID=` expects.
    public var messageID: String {
        switch self {
        case .keyInvalidated: "bec7b85894d2454a8dfb1665a0d5640d"
        case .keyStillInvalid: "1fa84792f9364284beb41cc5e1eacd24"
        case .keyActivated: "4ba022e1ab334b3e8adcfa8258b382f0"
        case .spoolRejected: "07665c7345674552b307b6372f9f546c"
        case .checkDegraded: "41cb214d141f4b94a5b7f56231d65d65"
        case .checkRecovered: "47dc4cf233654a19bc71d7423f6c2b67"
        case .accessDenied: "a2b8d43586914041bf1b787d982558f1"
        case .apiRequestError: "4f28a134e7c642d4ad23d269c2490624"
        case .daemonLifecycle: "0d21e88f13f24d42b240b8f47bf2c4c8"
        case .consumerReported401: "d14aa51bbef64129938a45c06c60d886"
        case .accessDeniedSuppressed: "3cbe7adacfb441af8e7929c3648973e2"
        case .keyRolledBack: "ec911056bbd6459c99072eff9a5390db"
        case .consumerRestarted: "f8d8bd9203914d2db8ea76a3b9ca2507"
        case .sourceFetchFailed: "f907bc8654664211b2eb7a11a4b623c5"
        case .sourceNoNewKey: "17ab729e7e824708b9ab51e1023defa4"
        }
    }

    /// The syslog priority of README "Logging and the journal", as the swift-log level that maps to it.
    public var level: Logger.Level {
        switch self {
        case .keyInvalidated: .critical  // 2
        case .keyStillInvalid, .spoolRejected, .apiRequestError, .sourceFetchFailed: .error  // 3
        case .checkDegraded, .accessDenied, .consumerReported401, .accessDeniedSuppressed, .keyRolledBack, .sourceNoNewKey:
            .warning  // 4
        case .keyActivated, .checkRecovered, .consumerRestarted: .notice  // 5
        case .daemonLifecycle: .info  // 6
        }
    }
}

/// Metadata keys with a meaning in the journal: each becomes the field
/// `RECOTAP_<KEY>` (dots and other punctuation as `_`, upper case).
public enum LogKey {
    public static let event = "event"
    public static let messageID = "message_id"
    public static let keyFingerprint = "key.fingerprint"
    public static let keyVersion = "key.version"
    public static let checkOutcome = "check.outcome"
    public static let httpStatus = "http.status"
    public static let reason = "reason"
    public static let latencyMilliseconds = "latency_ms"
    public static let spoolFile = "spool.file"
    /// Where the key came from: `spool`, `command`, `reverify`, `rollback`.
    public static let keySource = "key.source"
    /// The key source command's program, what made it run, and how it ended.
    public static let sourceCommand = "source.command"
    public static let sourceTrigger = "source.trigger"
    public static let exitStatus = "exit_status"
    public static let signal = "signal"
    public static let durationMilliseconds = "duration_ms"
    /// The key source's standard error, summarised and redacted.
    public static let stderr = "stderr"
    public static let peerUID = "peer.uid"
    public static let peerPID = "peer.pid"
    public static let peerUnit = "peer.unit"
    public static let error = "error"
}

extension Logger {
    /// Logs one of the events of README "Logging and the journal" at its priority, with its MESSAGE_ID.
    public func event(
        _ event: KeydEvent,
        _ message: @autoclosure () -> Logger.Message,
        metadata: @autoclosure () -> Logger.Metadata = [:],
        file: String = #fileID,
        function: String = #function,
        line: UInt = #line
    ) {
        log(
            level: event.level,
            message(),
            metadata: metadata().merging(
                [LogKey.event: .string(event.rawValue), LogKey.messageID: .string(event.messageID)]
            ) { _, new in new },
            file: file, function: function, line: line
        )
    }
}
