import Foundation
import Logging
import Synchronization
import Testing

@testable import RecotapKeyd

@Suite("Outside input: saturating conversions, escaping, query parameters")
struct InputTests {
    @Test("saturating conversions clamp instead of trapping, and NaN is nil")
    func saturating() {
        #expect(Saturating.int64(1e300) == .max)
        #expect(Saturating.int64(-1e300) == .min)
        #expect(Saturating.int64(9_223_372_036_854_775_808.0) == .max, "2^63 itself traps Int64(_:)")
        #expect(Saturating.int64(.nan) == nil)
        #expect(Saturating.int64(.infinity) == .max)
        #expect(Saturating.int64(41.9) == 41)
        #expect(Saturating.int64(UInt64.max) == .max)
        #expect(Saturating.duration(seconds: 1e16) == .milliseconds(Int64.max))
        #expect(Saturating.duration(seconds: 2.5) == .milliseconds(2500))
        #expect(DurationParsing.parse("99999999999999999999d") == .milliseconds(Int64.max))
        #expect(Date(timeIntervalSince1970: 1e17).since(Date(timeIntervalSince1970: 0)) == .milliseconds(Int64.max))
    }

    @Test("control characters, bidirectional overrides and backslashes are escaped; printable text is not")
    func terminalSafe() {
        #expect(TerminalSafe.escape("key-2026.txt") == "key-2026.txt")
        #expect(TerminalSafe.escape("Grüße ✓") == "Grüße ✓")
        #expect(TerminalSafe.escape("a\u{1b}[2Jb\nc\r\td\u{7f}") == #"a\x1b[2Jb\nc\r\td\x7f"#)
        #expect(TerminalSafe.escape("x\u{9b}31m") == #"x\u{9b}31m"#)
        #expect(TerminalSafe.escape("gpj.\u{202e}exe") == #"gpj.\u{202e}exe"#)
        #expect(TerminalSafe.escape(#"C:\x1b"#) == #"C:\\x1b"#, "a literal backslash cannot pass for an escape")
        #expect(TerminalSafe.escape("\u{0}") == #"\x00"#)
    }

    @Test("journal entries and console lines carry outside text escaped, in MESSAGE and every field")
    func logHandlersEscape() {
        let fields = JournalFields.fields(
            level: .warning, message: "refused evil\u{1b}]0;owned\u{07}\nforged", metadata: ["spool.file": "evil\u{1b}\n"],
            identifier: "recotap-keyd", file: "f", function: "g", line: 1)
        let message = fields.first { $0.name == "MESSAGE" }?.value
        #expect(message == #"refused evil\x1b]0;owned\x07\nforged"#)
        #expect(fields.first { $0.name == "RECOTAP_SPOOL_FILE" }?.value == #"evil\x1b\n"#)

        let lines = LockedLines()
        let logger = Logger(label: "test") { _ in ConsoleLogHandler(label: "recotap-keyd", level: .info, write: { lines.append($0) }) }
        logger.warning("peer comm \("bad\u{1b}[31m\nline")", metadata: ["peer.comm": "x\u{1b}"])
        let line = lines.all.joined()
        #expect(line.hasSuffix("\n") && line.dropLast().contains("\n") == false, "one line: \(line)")
        #expect(!line.contains("\u{1b}"))
        #expect(line.contains(#"bad\x1b[31m\nline"#) && line.contains(#"peer.comm=x\x1b"#))
    }

    @Test("JSON escapes every control character, C1, bidirectional and invisible ones too (beyond the BMP as a surrogate pair), and still decodes to the text")
    func jsonEscapes() {
        let text = "a\u{1b}b\u{7f}c\u{9b}d\u{202e}e\u{E0041}f"
        let json = WireJSON.encode(Wire.Report(fingerprint: text))
        #expect(json == #"{"fingerprint":"a\u001bb\u007fc\u009bd\u202ee\udb40\udc41f"}"#)
        #expect(WireJSON.decode(Wire.Report.self, from: json)?.fingerprint == text)
    }

    @Test("wait is a decimal number: digits, a fraction, an exponent — no sign, hex, inf or nan")
    func decimalNumbers() {
        for good in ["0", "5", "2.5", ".5", "5.", "1e16", "1E+3", "1e-3", "99999999999999999999"] {
            #expect(APIRequest.isDecimalNumber(good), "\(good)")
        }
        for bad in ["", "-1", "+1", "0x10", "inf", "nan", "1e", "e5", ".", "1.2.3", "1 ", " 1", "١"] {
            #expect(!APIRequest.isDecimalNumber(bad), "\(bad)")
        }
    }

    @Test("a server echoing the key past the 200-character cut leaves no piece of it in the reason")
    func echoedKeyIsRedactedBeforeTheCut() throws {
        let key = APIKey(secret: "rtk_echoed_key_0123456789abcdefghij")
        let body = #"{"message":""# + String(repeating: "x", count: 185) + key.revealSecret() + #""}"#
        let result = CheckClassifier.classify(
            status: 401, reasonPhrase: "Unauthorized", headers: [], body: Array(body.utf8), latency: .zero, now: Date(),
            retryAfterCap: .seconds(300), redact: { RecotapAPIClient.redact($0, key: key) })
        let reason = try #require(result.reason)
        #expect(reason.count <= 200)
        #expect(!reason.contains(String(key.revealSecret().prefix(8))), "\(reason)")
    }

    @Test("a spool file with a name too long for a stamp in front is still moved to rejected/")
    func longNameRejected() throws {
        let dir = try TemporaryDirectory()
        let spool = try SpoolDirectory(path: dir.file("spool"))
        let name = String(repeating: "n", count: 250)
        try "bad".write(toFile: spool.path + "/" + name, atomically: false, encoding: .utf8)
        let moved = try spool.reject(name, at: Date()).get()
        #expect(moved.utf8.count <= 255 && moved.contains("…"))
        #expect(!FileManager.default.fileExists(atPath: spool.path + "/" + name))
    }

    @Test("Retry-After of any size or far date saturates and is capped; garbage is ignored")
    func retryAfter() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(CheckClassifier.parseRetryAfter("99999999999999999999999", now: now) == .seconds(Int64.max))
        #expect(CheckClassifier.parseRetryAfter("Fri, 31 Dec 9999 23:59:59 GMT", now: now).map { $0 > .seconds(1e11) } == true)
        #expect(CheckClassifier.parseRetryAfter("-5", now: now) == nil)
        // Found by the classifier fuzz target: this trapped inside Foundation's DateFormatter.
        let trap = String(decoding: Array("Fri, 3-".utf8) + [0xDC, 0xBB, 0x9A, 0x9C] + Array(" 9999 :5959:59 ".utf8) + [0, 0, 0, 0x80] + Array("GMT".utf8), as: UTF8.self)
        #expect(CheckClassifier.parseRetryAfter(trap, now: now) == nil)
        #expect(CheckClassifier.parseRetryAfter(String(repeating: "x", count: 10_000), now: now) == nil)
        let result = CheckClassifier.classify(
            status: 429, reasonPhrase: "Too Many Requests", headers: [("Retry-After", "99999999999999999999999")], body: nil,
            latency: .zero, now: now, retryAfterCap: .seconds(300))
        #expect(result.retryAfter == .seconds(300))
    }
}

/// Lines a console handler wrote, for reading back.
private final class LockedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }
}
