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
        let time = Date().formatted(.iso8601)
        let line = ([time, event.level.rawValue, "\(label):", TerminalSafe.escape(event.message.description)] + fields)
            .joined(separator: " ")
        write(line + "\n")
    }

    static func quote(_ value: String) -> String {
        if !value.isEmpty, !value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
