import Foundation
import Logging
import Testing

@testable import RecotapKeyd

/// A spool directory, a store with a working key, a scripted API and a captured journal.
private struct SpoolHarness {
    let dir: TemporaryDirectory
    let spool: SpoolDirectory
    let store: KeyStore
    let client: ScriptedClient
    let capture = Capture()
    let intake: SpoolIntake
    let working = APIKey(secret: "rtk_working_key_0000000001")

    init(verify: Bool = true) async throws {
        dir = try TemporaryDirectory()
        spool = try SpoolDirectory(path: dir.file("spool"))
        store = try KeyStore(path: dir.file("state/keyd.sqlite3"))
        try await store.addAndActivate(working, source: "setup", state: .valid, at: Date())
        let clock = SystemSchedulerClock()
        client = ScriptedClient(clock: clock)
        let capture = self.capture
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .debug, sink: capture.journal) }
        intake = SpoolIntake(
            directory: spool, store: store, client: client, verifyBeforeActivate: verify, clock: clock, logger: logger)
    }

    @discardableResult
    func write(_ name: String, _ content: String, mode: mode_t = 0o640) throws -> String {
        let path = spool.path + "/" + name
        try Data(content.utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    var rejected: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: spool.rejectedPath)) ?? []).sorted() }
    var remaining: [String] { spool.candidates().map(\.name) }
    var activeFingerprint: String? { get async throws { try await store.activeKey()?.fingerprint } }

    func rejections() -> [[String: String]] { capture.events(.spoolRejected) }

    /// Processes `name` and checks it was refused for `reason`: moved to rejected/
    /// (0600), logged as SPOOL_REJECTED, and the working key still active.
    func expectRejected(_ name: String, reason: String, fingerprint: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let verdicts = await intake.processAll()
        guard case .rejected(let why, let movedTo)? = verdicts[name] else {
            Issue.record("\(name): expected a rejection, got \(String(describing: verdicts[name]))", sourceLocation: sourceLocation)
            return
        }
        #expect(why.contains(reason), "\(why)", sourceLocation: sourceLocation)
        let target = try #require(movedTo, sourceLocation: sourceLocation)
        #expect(target.hasSuffix("Z-" + name), sourceLocation: sourceLocation)
        #expect(rejected.contains(target), sourceLocation: sourceLocation)
        #expect(!remaining.contains(name), sourceLocation: sourceLocation)
        var info = stat()
        lstat(spool.rejectedPath + "/" + target, &info)
        if info.st_mode & S_IFMT != S_IFLNK {
            #expect(info.st_mode & 0o777 == 0o600, sourceLocation: sourceLocation)
        }
        let entry = try #require(rejections().last, sourceLocation: sourceLocation)
        #expect(entry["RECOTAP_SPOOL_FILE"] == name, sourceLocation: sourceLocation)
        #expect(entry["RECOTAP_REASON"]?.contains(reason) == true, sourceLocation: sourceLocation)
        #expect(entry["PRIORITY"] == "3", sourceLocation: sourceLocation)
        #expect(entry["RECOTAP_KEY_FINGERPRINT"] == fingerprint, sourceLocation: sourceLocation)
        #expect(try await activeFingerprint == working.fingerprint, "the working key stays", sourceLocation: sourceLocation)
    }
}

@Suite("Key file content")
struct KeyFileContentTests {
    @Test("whitespace, a trailing newline, CRLF and a BOM are stripped", arguments: [
        "rtk_abcdefgh", "rtk_abcdefgh\n", "  rtk_abcdefgh \r\n", "\u{FEFF}rtk_abcdefgh\n", "\n\trtk_abcdefgh\n\n",
    ])
    func stripped(_ text: String) {
        #expect(KeyFileContent.parse(Array(text.utf8)) == .key("rtk_abcdefgh"))
    }

    @Test("refusals say what is wrong")
    func refusals() {
        func verdict(_ text: String) -> KeyFileContent.Verdict { KeyFileContent.parse(Array(text.utf8)) }
        #expect(verdict("") == .empty)
        #expect(verdict(" \n\r\n") == .empty)
        #expect(verdict("\u{FEFF}\n") == .empty)
        #expect(verdict("rtk key here") == .malformed("whitespace inside the key at position 4"))
        #expect(verdict("rtk_first\nrtk_second") == .malformed("more than one line (a key file holds exactly one key)"))
        #expect(verdict("rtk_clé_abcdef") == .malformed("byte 0xC3 at position 7 is not printable ASCII"))
        #expect(verdict("short") == .malformed("5 characters long; a key has 8 to 512"))
        #expect(verdict(String(repeating: "k", count: 513)) == .malformed("513 characters long; a key has 8 to 512"))
        #expect(verdict(String(repeating: "k", count: 512)) == .key(String(repeating: "k", count: 512)))
        #expect(verdict("12345678") == .key("12345678"))
    }
}

@Suite("Spool intake (real files)", .serialized)
struct SpoolIntakeTests {
    @Test("a good key is verified, activated in one transaction, and its file removed")
    func activates() async throws {
        let h = try await SpoolHarness()
        let fresh = APIKey(secret: "rtk_fresh_key_from_spool_01")
        try h.write("new.key", fresh.revealSecret() + "\n")
        let verdicts = await h.intake.processAll()
        #expect(verdicts["new.key"] == .activated(fingerprint: fresh.fingerprint, state: .valid))
        #expect(h.remaining.isEmpty)
        #expect(h.rejected.isEmpty)
        #expect(try await h.activeFingerprint == fresh.fingerprint)
        #expect(try await h.store.history().map(\.status) == [.active, .retired])
        #expect(h.client.calls.map(\.fingerprint) == [fresh.fingerprint], "verified with the API first")
        let activated = try #require(h.capture.journalEntries.first { $0.contains(JournalField("MESSAGE_ID", KeydEvent.keyActivated.messageID)) })
        #expect(activated.contains(JournalField("RECOTAP_KEY_FINGERPRINT", fresh.fingerprint)))
        #expect(activated.contains(JournalField("RECOTAP_KEY_PREVIOUS_FINGERPRINT", h.working.fingerprint)))
        #expect(activated.contains(JournalField("RECOTAP_SPOOL_FILE", "new.key")))
        #expect(activated.contains(JournalField("PRIORITY", "5")))
        #expect(!h.capture.everything.contains(fresh.revealSecret()))
    }

    @Test("not a regular file: a FIFO and a directory")
    func notRegular() async throws {
        let h = try await SpoolHarness()
        mkfifo(h.spool.path + "/pipe.key", 0o640)
        try await h.expectRejected("pipe.key", reason: "not a regular file (a FIFO)")
        try FileManager.default.createDirectory(atPath: h.spool.path + "/dir.key", withIntermediateDirectories: false)
        try await h.expectRejected("dir.key", reason: "not a regular file (a directory)")
    }

    @Test("a symlink, even to a readable file outside the spool")
    func symbolicLink() async throws {
        let h = try await SpoolHarness()
        let outside = try h.dir.write("outside.key", "rtk_outside_but_readable_1\n")
        symlink(outside, h.spool.path + "/link.key")
        try await h.expectRejected("link.key", reason: "symbolic link")
        #expect(FileManager.default.fileExists(atPath: outside), "the target is untouched")
    }

    @Test("a hard link")
    func hardLink() async throws {
        let h = try await SpoolHarness()
        let outside = try h.dir.write("original.key", "rtk_hard_linked_key_000001\n")
        link(outside, h.spool.path + "/hard.key")
        try await h.expectRejected("hard.key", reason: "hard link (2 names for one file")
    }

    @Test("too large")
    func tooLarge() async throws {
        let h = try await SpoolHarness()
        try h.write("big.key", String(repeating: "k", count: 5000))
        try await h.expectRejected("big.key", reason: "too large (5000 bytes")
    }

    @Test("empty")
    func empty() async throws {
        let h = try await SpoolHarness()
        try h.write("empty.key", "\n")
        try await h.expectRejected("empty.key", reason: "empty")
    }

    @Test("malformed, saying how", arguments: [
        ("rtk key with spaces", "whitespace inside the key"), ("short", "5 characters long"),
        ("rtk_one\nrtk_two_two", "more than one line"),
    ])
    func malformed(_ content: String, _ why: String) async throws {
        let h = try await SpoolHarness()
        try h.write("bad.key", content)
        try await h.expectRejected("bad.key", reason: "malformed: \(why)")
    }

    @Test("world-writable")
    func worldWritable() async throws {
        let h = try await SpoolHarness()
        try h.write("open.key", "rtk_world_writable_key_01\n", mode: 0o666)
        try await h.expectRejected("open.key", reason: "world-writable (mode 666)")
    }

    @Test("a key the API answers 401 for is refused and the old key kept")
    func refusedByAPI() async throws {
        let h = try await SpoolHarness()
        let dead = APIKey(secret: "rtk_dead_key_from_spool_001")
        h.client.script([ScriptedClient.invalid])
        try h.write("dead.key", dead.revealSecret())
        try await h.expectRejected("dead.key", reason: "refused by the API (HTTP 401: Invalid API key)", fingerprint: dead.fingerprint)
        #expect(h.rejections().last?["RECOTAP_HTTP_STATUS"] == "401")
    }

    @Test("a request the API refuses (403) keeps the current key and rejects the file with the API's reason")
    func apiRefusesRequest() async throws {
        let h = try await SpoolHarness()
        let key = APIKey(secret: "rtk_forbidden_workspace_01")
        h.client.script([CheckResult(outcome: .rejectedRequest, httpStatus: 403, reason: "Forbidden resource", latency: .zero)])
        try h.write("new.key", key.revealSecret())
        try await h.expectRejected("new.key", reason: "Forbidden resource", fingerprint: key.fingerprint)
    }

    @Test("with the API unreachable the key is activated unverified")
    func unreachable() async throws {
        let h = try await SpoolHarness()
        let key = APIKey(secret: "rtk_unverified_new_key_001")
        h.client.script([ScriptedClient.unreachable()])
        try h.write("new.key", key.revealSecret())
        #expect(await h.intake.processAll()["new.key"] == .activated(fingerprint: key.fingerprint, state: .unverified))
        #expect(try await h.store.activeKey()?.state == .unverified)
    }

    @Test("without verify_before_activate the key goes in unverified, without a request")
    func noVerification() async throws {
        let h = try await SpoolHarness(verify: false)
        let key = APIKey(secret: "rtk_not_verified_first_01")
        try h.write("new.key", key.revealSecret())
        #expect(await h.intake.processAll()["new.key"] == .activated(fingerprint: key.fingerprint, state: .unverified))
        #expect(h.client.calls.isEmpty)
    }

    @Test("the key already active is removed silently; a file seen again after a crash the same way")
    func alreadyActive() async throws {
        let h = try await SpoolHarness()
        try h.write("again.key", h.working.revealSecret() + "\r\n")
        #expect(await h.intake.processAll()["again.key"] == .alreadyActive)
        #expect(h.remaining.isEmpty)
        #expect(h.rejected.isEmpty)
        #expect(h.rejections().isEmpty)
        #expect(h.client.calls.isEmpty)
    }

    @Test("a key already confirmed invalid is refused without asking the API")
    func knownInvalid() async throws {
        let h = try await SpoolHarness()
        let old = APIKey(secret: "rtk_regenerated_long_ago_1")
        let id = try await h.store.addAndActivate(old, source: "old", state: .valid, at: Date()).activated.id
        try await h.store.record(check: CheckRecord(keyID: id, at: Date(), outcome: .invalid, httpStatus: 401, latencyMilliseconds: 1, reason: "Invalid API key"))
        try await h.store.addAndActivate(h.working, source: "again", state: .valid, at: Date())
        try h.write("old.key", old.revealSecret())
        try await h.expectRejected("old.key", reason: "already confirmed invalid", fingerprint: old.fingerprint)
        #expect(h.client.calls.isEmpty)
    }

    @Test("a file still open for writing is not read until it is closed")
    func stillBeingWritten() async throws {
        let h = try await SpoolHarness()
        let key = APIKey(secret: "rtk_written_while_scanned_01")
        let path = h.spool.path + "/slow.key"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o640)
        #expect(fd >= 0)
        _ = Array("rtk_writ".utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        #expect(await h.intake.processAll()["slow.key"] == .stillBeingWritten)
        #expect(h.remaining == ["slow.key"])
        #expect(h.rejections().isEmpty)
        _ = Array("ten_while_scanned_01\n".utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #expect(await h.intake.processAll()["slow.key"] == .activated(fingerprint: key.fingerprint, state: .valid))
    }

    @Test("the scan at start leaves files modified after the watch began to their own events")
    func startScanCutoff() async throws {
        let h = try await SpoolHarness()
        let older = APIKey(secret: "rtk_closed_before_the_watch")
        try h.write("older.key", older.revealSecret())
        try h.write("newer.key", "rtk_still_being_written_maybe")
        let now = Int(Date().timeIntervalSince1970)
        var past = [timespec(tv_sec: now - 60, tv_nsec: 0), timespec(tv_sec: now - 60, tv_nsec: 0)]
        utimensat(AT_FDCWD, h.spool.path + "/older.key", &past, 0)
        var future = [timespec(tv_sec: now + 60, tv_nsec: 0), timespec(tv_sec: now + 60, tv_nsec: 0)]
        utimensat(AT_FDCWD, h.spool.path + "/newer.key", &future, 0)
        let verdicts = await h.intake.processAll(modifiedBefore: Date())
        #expect(verdicts.keys.sorted() == ["older.key"])
        #expect(h.remaining == ["newer.key"])
    }

    @Test("names starting with . or ending in .tmp or ~ are ignored until renamed")
    func ignoredNames() async throws {
        let h = try await SpoolHarness()
        for name in [".hidden", "partial.tmp", "editor~"] { try h.write(name, "rtk_in_progress_key_0001") }
        #expect(await h.intake.processAll().isEmpty)
        #expect(rename(h.spool.path + "/partial.tmp", h.spool.path + "/done.key") == 0)
        #expect(await h.intake.processAll().keys.sorted() == ["done.key"])
    }

    @Test("50 files at once: all judged, oldest first, the last good one wins")
    func fiftyFiles() async throws {
        let h = try await SpoolHarness()
        var expected: [(name: String, key: APIKey?)] = []
        let base = Date().timeIntervalSince1970 - 1000
        for index in 0..<50 {
            let name = String(format: "k%02d.key", 49 - index)  // names in reverse of time order
            let good = index % 3 == 0
            let key = APIKey(secret: "rtk_batch_key_\(index)_abcdefgh")
            try h.write(name, good ? key.revealSecret() : "bad key \(index)")
            var times = [timespec(tv_sec: Int(base) + index, tv_nsec: 0), timespec(tv_sec: Int(base) + index, tv_nsec: 0)]
            utimensat(AT_FDCWD, h.spool.path + "/" + name, &times, 0)
            expected.append((name, good ? key : nil))
        }
        let verdicts = await h.intake.processAll()
        #expect(verdicts.count == 50)
        #expect(h.remaining.isEmpty)
        let lastGood = try #require(expected.last { $0.key != nil }?.key)
        #expect(try await h.activeFingerprint == lastGood.fingerprint)
        let goodInOrder = expected.compactMap { $0.key?.fingerprint }
        #expect(h.client.calls.map(\.fingerprint) == goodInOrder, "judged oldest first")
        #expect(h.rejected.count == SpoolDirectory.rejectedKept, "rejected/ keeps the newest 20")
        let lastBad = try #require(expected.last { $0.key == nil }?.name)
        #expect(h.rejected.contains { $0.hasSuffix("Z-" + lastBad) || $0.hasSuffix("-" + lastBad) }, "the newest refusal is kept")
        let firstBad = try #require(expected.first { $0.key == nil }?.name)
        #expect(!h.rejected.contains { $0.hasSuffix("-" + firstBad) }, "the oldest refusal is gone")
    }

    @Test("a file that cannot be moved is logged once and left, not retried in a loop")
    func cannotMove() async throws {
        let h = try await SpoolHarness()
        try FileManager.default.removeItem(atPath: h.spool.rejectedPath)
        try "not a directory".write(toFile: h.spool.rejectedPath, atomically: false, encoding: .utf8)
        try h.write("stuck.key", "bad key")
        let first = await h.intake.processAll()
        guard case .rejected(_, nil)? = first["stuck.key"] else {
            Issue.record("expected a rejection that could not be moved: \(String(describing: first["stuck.key"]))")
            return
        }
        #expect(h.remaining == ["stuck.key"])
        #expect(h.rejections().count == 1)
        for _ in 0..<3 { await h.intake.processAll() }
        #expect(h.rejections().count == 1, "not judged again while unchanged")
        try h.write("stuck.key", "still bad")
        let later = timespec(tv_sec: Int(Date().timeIntervalSince1970) + 5, tv_nsec: 0)
        var times = [later, later]
        utimensat(AT_FDCWD, h.spool.path + "/stuck.key", &times, 0)
        await h.intake.processAll()
        #expect(h.rejections().count == 2, "judged again once it changed")
    }

    @Test("the spool directory is created 3770 with rejected/ 0700; a symlink or a world-writable one is refused")
    func directorySetup() throws {
        let dir = try TemporaryDirectory()
        let spool = try SpoolDirectory(path: dir.file("new/spool"))
        #expect(fileMode(spool.path) == 0o3770)
        #expect(fileMode(spool.rejectedPath) & 0o777 == 0o700)
        try FileManager.default.createSymbolicLink(atPath: dir.file("link"), withDestinationPath: spool.path)
        #expect(throws: SpoolSetupError.self) { try SpoolDirectory(path: dir.file("link")) }
        try FileManager.default.createDirectory(atPath: dir.file("open"), withIntermediateDirectories: false)
        chmod(dir.file("open"), 0o777)
        #expect { try SpoolDirectory(path: dir.file("open")) } throws: { "\($0)".contains("world-writable") }
    }
}
