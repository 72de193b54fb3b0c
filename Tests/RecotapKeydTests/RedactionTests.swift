import Foundation
import Logging
import Testing

@testable import RecotapKeyd

@Suite("Redaction")
struct RedactionTests {
    let secret = "rtk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    var key: APIKey { APIKey(secret: secret) }

    @Test("the fingerprint is the first 12 hex digits of SHA-256")
    func fingerprint() {
        // sha256("rtk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"), computed independently with sha256sum.
        #expect(key.fingerprint == Self.sha256Prefix(secret))
        #expect(key.fingerprint.count == 12)
        #expect(APIKey(secret: "abc").fingerprint == "ba7816bf8f01")
    }

    static func sha256Prefix(_ text: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try? process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        return String(String(decoding: data, as: UTF8.self).prefix(12))
    }

    @Test("description, debugDescription, interpolation, dump and Mirror show only the fingerprint")
    func stringForms() {
        var dumped = ""
        dump(key, to: &dumped)
        var dumpedRecord = ""
        let record = KeyRecord(
            id: 1, fingerprint: key.fingerprint, key: key, source: "s", status: .active, state: .valid,
            addedAt: Date(), activatedAt: nil, retiredAt: nil, retireReason: nil, lastVerifiedAt: nil,
            invalidSince: nil, secretErasedAt: nil)
        dump(record, to: &dumpedRecord)
        let forms = [
            String(describing: key), String(reflecting: key), "\(key)", key.description, key.debugDescription,
            dumped, dumpedRecord, String(describing: record), String(reflecting: record), "\([key])", "\(Optional(key) as Any)",
            Mirror(reflecting: key).children.map { "\($0.label ?? ""):\($0.value)" }.joined(),
        ]
        for form in forms {
            #expect(!form.contains(secret), "leaked in: \(form.replacingOccurrences(of: secret, with: "<SECRET>"))")
        }
        #expect(String(describing: key).contains(key.fingerprint))
        #expect(dumped.contains(key.fingerprint))
    }

    @Test("a key logged through every handler never shows its secret")
    func throughHandlers() {
        let capture = Capture()
        let key = self.key
        let loggers = [
            Logger(label: "c") { _ in ConsoleLogHandler(label: "recotap-keyd", level: .trace, write: capture.console) },
            Logger(label: "j") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .trace, sink: capture.journal) },
        ]
        for logger in loggers {
            logger.info("activated \(key)", metadata: ["key": "\(key)", "record": .stringConvertible(key)])
            logger.event(.keyActivated, "new key \(String(describing: key))", metadata: [LogKey.keyFingerprint: "\(key.fingerprint)"])
            logger.error("failed", metadata: ["keys": .array([.stringConvertible(key)])])
        }
        #expect(capture.consoleLines.count == 3)
        #expect(capture.journalEntries.count == 3)
        #expect(!capture.everything.contains(secret))
        #expect(capture.everything.contains(key.fingerprint))
    }

    @Test("store errors and records never carry the secret in their text")
    func storeTexts() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("keyd.sqlite3"))
        let activation = try await store.addAndActivate(key, source: "new.key", state: .valid, at: Date())
        #expect(!"\(activation)".contains(secret))
        #expect(!"\(try await store.history())".contains(secret))
        do throws(StoreError) {
            _ = try await store.activate(candidate: activation.activated.id, state: .valid, at: Date())
        } catch {
            #expect(!error.description.contains(secret))
        }
    }
}
