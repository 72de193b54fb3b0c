import Foundation
import Logging

/// One line per event on stderr, metadata as `key=value`, for a daemon run by hand.
/// (Under systemd the journal handler is used instead: see ``LoggingSetup``.)
public struct ConsoleLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let write: @Sendable (String) -> Void

    public init(label: String, level: Logger.Level, write: @escaping @Sendable (String) -> Void = ConsoleLogHandler.standardError) {
        self.label = label
        self.logLevel = level
        self.write = write
    }

    public static let standardError: @Sendable (String) -> Void = { line in
        let bytes = Array(line.utf8)
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Foundation.write(2, raw.baseAddress! + offset, raw.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = JournalFields.metadata(of: event, handler: metadata, provider: metadataProvider)
        merged[LogKey.messageID] = nil  // the event name says the same, readably
        // Escaped: a file name or a peer's comm must not move the cursor or start a
        // line of its own.
        let fields = merged.sorted { $0.key < $1.key }.map {
            "\($0.key)=\(Self.quote(TerminalSafe.escape(JournalFields.render($0.value))))"
        }
        let time = Self.timestamp(time(nil))
        let line = ([time, event.level.rawValue, "\(label):", TerminalSafe.escape(event.message.description)] + fields)
            .joined(separator: " ")
        write(line + "\n")
    }

    /// `2026-11-29T13:11:08Z`: ISO 8601 in UTC, by `gmtime_r` (`Date.formatted`
    /// looks up the time zone through ICU: a megabyte of resident pages for a log line).
    static func timestamp(_ seconds: time_t) -> String {
        var seconds = seconds
        var parts = tm()
        guard gmtime_r(&seconds, &parts) != nil else { return "?" }
        func padded(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return padded(parts.tm_year + 1900, 4) + "-" + padded(parts.tm_mon + 1, 2) + "-" + padded(parts.tm_mday, 2)
            + "T" + padded(parts.tm_hour, 2) + ":" + padded(parts.tm_min, 2) + ":" + padded(parts.tm_sec, 2) + "Z"
    }

    static func quote(_ value: String) -> String {
        if !value.isEmpty, !value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
