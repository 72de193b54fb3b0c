import Logging

/// One field of a native journal entry.
public struct JournalField: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
    public var description: String { "\(name)=\(value)" }
}

/// Turns a log event into the fields of a native journal entry. Pure, so tests can
/// read the exact field list without a journal.
public enum JournalFields {
    /// Syslog priority (0 emerg … 7 debug) of a swift-log level.
    public static func priority(of level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// `key.fingerprint` → `RECOTAP_KEY_FINGERPRINT`. Journal field names may hold only
    /// upper-case letters, digits and `_`, must not start with `_` or a digit, and are
    /// at most 64 characters.
    public static func fieldName(forMetadataKey key: String) -> String {
        if key == LogKey.messageID { return "MESSAGE_ID" }
        let body = key.uppercased().unicodeScalars.map { scalar -> String in
            (("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)) ? String(scalar) : "_"
        }.joined()
        return String(("RECOTAP_" + body).prefix(64))
    }

    public static func fields(
        level: Logger.Level,
        message: String,
        metadata: Logger.Metadata,
        identifier: String,
        file: String,
        function: String,
        line: UInt
    ) -> [JournalField] {
        // Every value a person may read is escaped: journalctl prints MESSAGE as it is,
        // and a spool file name, an API reason or a peer's comm comes from outside.
        var fields = [
            JournalField("MESSAGE", TerminalSafe.escape(message)),
            JournalField("PRIORITY", String(priority(of: level))),
            JournalField("SYSLOG_IDENTIFIER", identifier),
            JournalField("CODE_FILE", file),
            JournalField("CODE_LINE", String(line)),
            JournalField("CODE_FUNC", function),
        ]
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            fields.append(JournalField(fieldName(forMetadataKey: key), TerminalSafe.escape(render(value))))
        }
        return fields
    }

    /// All the metadata of one event, as every handler sees it: the handler's own,
    /// then the metadata provider's, then the event's (later ones win), and the
    /// event's error under ``LogKey/error``.
    static func metadata(
        of event: LogEvent, handler: Logger.Metadata, provider: Logger.MetadataProvider?
    ) -> Logger.Metadata {
        var merged = handler
        if let provided = provider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        if let error = event.error { merged[LogKey.error] = .string("\(error)") }
        return merged
    }

    static func render(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): values.map(render).joined(separator: ",")
        case .dictionary(let dictionary):
            dictionary.sorted { $0.key < $1.key }.map { "\($0.key)=\(render($0.value))" }.joined(separator: ",")
        }
    }
}
