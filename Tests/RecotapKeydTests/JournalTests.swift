import Foundation
import Logging
import Testing

@testable import RecotapKeyd

@Suite("Journal")
struct JournalTests {
    @Test("console time stamps are ISO 8601 in UTC, as Foundation writes them")
    func consoleTimestamps() {
        #expect(ConsoleLogHandler.timestamp(0) == "1970-01-01T00:00:00Z")
        for seconds in [946_684_799, 1_800_000_000, 4_102_444_800] {
            #expect(ConsoleLogHandler.timestamp(time_t(seconds)) == Date(timeIntervalSince1970: Double(seconds)).formatted(.iso8601))
        }
    }

    @Test("an event with metadata becomes the documented journal fields")
    func eventFields() throws {
        let capture = Capture()
        let logger = Logger(label: "test") { _ in
            JournalLogHandler(identifier: "recotap-keyd", level: .debug, sink: capture.journal)
        }
        let line: UInt = #line + 1
        logger.event(.keyInvalidated, "key 3fa2c1d09e7b is no longer valid", metadata: [
            LogKey.keyFingerprint: "3fa2c1d09e7b", LogKey.httpStatus: "401", LogKey.reason: "Invalid API key",
            LogKey.keyVersion: "7", "peer.unit": "billing.service",
        ])
        let entry = try #require(capture.journalEntries.first)
        var fields: [String: String] = [:]
        for field in entry { fields[field.name] = field.value }
        #expect(fields["MESSAGE"] == "key 3fa2c1d09e7b is no longer valid")
        #expect(fields["PRIORITY"] == "2")
        #expect(fields["MESSAGE_ID"] == "bec7b85894d2454a8dfb1665a0d5640d")
        #expect(fields["SYSLOG_IDENTIFIER"] == "recotap-keyd")
        #expect(fields["CODE_FILE"]?.hasSuffix("JournalTests.swift") == true)
        #expect(fields["CODE_LINE"] == String(line))
        #expect(fields["CODE_FUNC"] == "eventFields()")
        #expect(fields["RECOTAP_KEY_FINGERPRINT"] == "3fa2c1d09e7b")
        #expect(fields["RECOTAP_HTTP_STATUS"] == "401")
        #expect(fields["RECOTAP_REASON"] == "Invalid API key")
        #expect(fields["RECOTAP_KEY_VERSION"] == "7")
        #expect(fields["RECOTAP_PEER_UNIT"] == "billing.service")
        #expect(fields["RECOTAP_EVENT"] == "KEY_INVALIDATED")
        #expect(entry.allSatisfy { $0.name.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" } })
        #expect(entry.count == Set(entry.map(\.name)).count, "no field twice")
    }

    @Test("an ordinary log line has no MESSAGE_ID")
    func plainLine() throws {
        let capture = Capture()
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .info, sink: capture.journal) }
        logger.notice("hello", metadata: ["spool.file": "new.key"])
        logger.debug("below the level")
        #expect(capture.journalEntries.count == 1)
        let names = try #require(capture.journalEntries.first).map(\.name)
        #expect(!names.contains("MESSAGE_ID"))
        #expect(names.contains("RECOTAP_SPOOL_FILE"))
    }

    @Test("swift-log levels map to syslog priorities", arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func priorities(_ level: Logger.Level, _ priority: Int) {
        #expect(JournalFields.priority(of: level) == priority)
    }

    @Test("every event has the MESSAGE_ID and priority of the README's Logging and the journal")
    func eventTable() {
        let design: [String: (String, Int)] = [
            "KEY_INVALIDATED": ("bec7b85894d2454a8dfb1665a0d5640d", 2),
            "KEY_STILL_INVALID": ("1fa84792f9364284beb41cc5e1eacd24", 3),
            "KEY_ACTIVATED": ("4ba022e1ab334b3e8adcfa8258b382f0", 5),
            "SPOOL_REJECTED": ("07665c7345674552b307b6372f9f546c", 3),
            "CHECK_DEGRADED": ("41cb214d141f4b94a5b7f56231d65d65", 4),
            "CHECK_RECOVERED": ("47dc4cf233654a19bc71d7423f6c2b67", 5),
            "ACCESS_DENIED": ("a2b8d43586914041bf1b787d982558f1", 4),
            "API_REQUEST_ERROR": ("4f28a134e7c642d4ad23d269c2490624", 3),
            "DAEMON_LIFECYCLE": ("0d21e88f13f24d42b240b8f47bf2c4c8", 6),
            "CONSUMER_REPORTED_401": ("d14aa51bbef64129938a45c06c60d886", 4),
            "ACCESS_DENIED_SUPPRESSED": ("3cbe7adacfb441af8e7929c3648973e2", 4),
            "KEY_ROLLED_BACK": ("ec911056bbd6459c99072eff9a5390db", 4),
            "CONSUMER_RESTARTED": ("f8d8bd9203914d2db8ea76a3b9ca2507", 5),
            "SOURCE_FETCH_FAILED": ("f907bc8654664211b2eb7a11a4b623c5", 3),
            "SOURCE_NO_NEW_KEY": ("17ab729e7e824708b9ab51e1023defa4", 4),
        ]
        #expect(KeydEvent.allCases.count == design.count)
        for event in KeydEvent.allCases {
            let expected = design[event.rawValue]
            #expect(expected?.0 == event.messageID, "\(event.rawValue)")
            #expect(expected?.1 == JournalFields.priority(of: event.level), "\(event.rawValue)")
        }
    }

    @Test("metadata keys become valid RECOTAP_ field names")
    func fieldNames() {
        #expect(JournalFields.fieldName(forMetadataKey: "key.fingerprint") == "RECOTAP_KEY_FINGERPRINT")
        #expect(JournalFields.fieldName(forMetadataKey: "latency_ms") == "RECOTAP_LATENCY_MS")
        #expect(JournalFields.fieldName(forMetadataKey: "sl-service") == "RECOTAP_SL_SERVICE")
        #expect(JournalFields.fieldName(forMetadataKey: "message_id") == "MESSAGE_ID")
        #expect(JournalFields.fieldName(forMetadataKey: String(repeating: "x", count: 100)).count == 64)
    }

    @Test("the console handler writes one line per event with key=value metadata")
    func consoleLine() throws {
        let capture = Capture()
        let logger = Logger(label: "test") { _ in ConsoleLogHandler(label: "recotap-keyd", level: .info, write: capture.console) }
        logger.event(.spoolRejected, "refused new.key", metadata: ["spool.file": "new key.txt", LogKey.reason: "hard link"])
        let line = try #require(capture.consoleLines.first)
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().split(separator: "\n").count == 1)
        #expect(line.contains(" error recotap-keyd: refused new.key "))
        #expect(line.contains("event=SPOOL_REJECTED"))
        #expect(line.contains("spool.file=\"new key.txt\""))
        #expect(line.contains("reason=\"hard link\""))
    }

    @Test("log.target auto picks the journal only when stderr is the stream JOURNAL_STREAM names")
    func autoTarget() {
        var info = stat()
        fstat(2, &info)
        let matching = "\(info.st_dev):\(info.st_ino)"
        #expect(LoggingSetup.resolve(.auto, environment: ["JOURNAL_STREAM": matching]) == .journal)
        #expect(LoggingSetup.resolve(.auto, environment: ["JOURNAL_STREAM": "1:2"]) == .console)
        #expect(LoggingSetup.resolve(.auto, environment: [:]) == .console)
        #expect(LoggingSetup.resolve(.journal, environment: [:]) == .journal)
        #expect(LoggingSetup.resolve(.console, environment: ["JOURNAL_STREAM": matching]) == .console)
    }
}
