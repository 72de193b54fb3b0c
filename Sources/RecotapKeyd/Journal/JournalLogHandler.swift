import CSystemd
import Logging

/// Where journal entries go: the real journal in production, a capturing closure in
/// tests (the real `sd_journal_sendv` answers 0 even with no journald listening).
public struct JournalSink: Sendable {
    public var send: @Sendable ([JournalField]) -> Void

    public init(send: @escaping @Sendable ([JournalField]) -> Void) {
        self.send = send
    }

    /// Native journal protocol through libsystemd's `sd_journal_sendv`, which copes
    /// with newlines and binary values itself.
    public static let systemd = JournalSink { fields in
        var buffer: [UInt8] = []
        var ranges: [(start: Int, count: Int)] = []
        for field in fields {
            let start = buffer.count
            buffer.append(contentsOf: field.name.utf8)
            buffer.append(UInt8(ascii: "="))
            buffer.append(contentsOf: field.value.utf8)
            ranges.append((start, buffer.count - start))
        }
        buffer.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            var vectors = ranges.map { iovec(iov_base: base + $0.start, iov_len: $0.count) }
            _ = sd_journal_sendv(&vectors, Int32(vectors.count))
        }
    }
}

/// A swift-log handler that writes native journal entries: `MESSAGE`, `PRIORITY`,
/// `SYSLOG_IDENTIFIER`, `CODE_*`, `MESSAGE_ID` for the events of ``KeydEvent``, and
/// every metadata entry as a `RECOTAP_*` field (see ``JournalFields``).
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let identifier: String
    private let sink: JournalSink

    public init(identifier: String, level: Logger.Level, sink: JournalSink = .systemd) {
        self.identifier = identifier
        self.logLevel = level
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = JournalFields.metadata(of: event, handler: metadata, provider: metadataProvider)
        sink.send(
            JournalFields.fields(
                level: event.level, message: event.message.description, metadata: merged,
                identifier: identifier, file: event.file, function: event.function, line: event.line))
    }
}
