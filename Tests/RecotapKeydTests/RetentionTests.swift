import CSQLite
import Foundation
import Logging
import Testing

@testable import RecotapKeyd

/// The running daemon keeps the store's promises (README "The store"): retention at
/// start, after a rotation and daily, down to the bytes of the file and its WAL.
@Suite("Retention (manual clock, real SQLite files)")
struct RetentionTests {
    private static let keys = (1...4).map { APIKey(secret: "rtk_retention_test_key_\($0)_" + String(repeating: "x", count: 12)) }

    @Test("over 8 simulated days: a rejected candidate's secret is gone at once, a rotated-out key's when the API confirmed it invalid (at the rotation) or 7 days after retirement (within a day); the active key's never — none left in the database or its WAL")
    func eightDays() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyd.sqlite3")
        let store = try KeyStore(path: path)
        let clock = ManualClock()
        let capture = Capture()
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .debug, sink: capture.journal) }
        let (one, two, three, four) = (Self.keys[0], Self.keys[1], Self.keys[2], Self.keys[3])

        let first = try await store.addAndActivate(one, source: "one", state: .valid, at: clock.now).activated.id
        let rejected = try await store.addCandidate(two, source: "two", at: clock.now).id
        try await store.reject(candidate: rejected, at: clock.now, reason: "the API refused it")
        let second = try await store.addAndActivate(three, source: "three", state: .valid, at: clock.now).activated.id  // retires one

        let readiness = Readiness()
        readiness.markReady()
        let service = RetentionService(
            store: store, clock: clock, readiness: readiness, logger: logger, published: store.current.changes())
        let running = Task { try await service.run() }
        #expect(await clock.settle(sleepers: 1), "the start pass ran and the service sleeps until tomorrow")
        #expect(try await store.key(id: first)?.key == one, "retired moments ago and not known invalid: kept")
        #expect(!fileContains(path, two.revealSecret()) && !fileContains(path + "-wal", two.revealSecret()),
                "a rejected candidate's secret is in neither file")

        // Day 2: the active key is confirmed invalid, then replaced — erased at the rotation.
        clock.advance(by: .seconds(86_400))
        #expect(await clock.settle(sleepers: 1))
        _ = try await store.record(check: CheckRecord(
            keyID: second, at: clock.now, outcome: .invalid, httpStatus: 401, latencyMilliseconds: 5, reason: "Invalid API key"))
        _ = try await store.record(check: CheckRecord(
            keyID: second, at: clock.now, outcome: .invalid, httpStatus: 401, latencyMilliseconds: 5, reason: "Invalid API key"))
        try await store.addAndActivate(four, source: "four", state: .valid, at: clock.now)
        #expect(try await eventually { try await store.key(id: second)?.key == nil }, "erased at the rotation, with no day passing")
        #expect(try await store.key(id: first)?.key == one, "one day after retirement: still kept")

        // Days 3–8, a day at a time: the first key goes once 7 days have passed.
        for day in 3...8 {
            clock.advance(by: .seconds(86_400))
            #expect(await clock.settle(sleepers: 1))
            if day == 7 { #expect(try await store.key(id: first)?.key == one, "6 days after retirement: still kept") }
        }
        #expect(try await store.key(id: first)?.key == nil)
        #expect(try await store.activeKey()?.key == four, "the active key's secret is never erased")
        for key in [one, two, three] {
            #expect(!fileContains(path, key.revealSecret()), "\(key.fingerprint) in the database file")
            #expect(!fileContains(path + "-wal", key.revealSecret()), "\(key.fingerprint) in the WAL")
        }
        #expect(fileContains(path, four.revealSecret()) || fileContains(path + "-wal", four.revealSecret()),
                "the search finds a secret that is there")
        let entries = capture.journalEntries.map { Dictionary($0.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first }) }
        let passes = entries.filter { ($0["MESSAGE"] ?? "").hasPrefix("retention: erased") }
        #expect(passes.count == 9, "one pass at start, one at the rotation, one a day for 7 days — none per check")
        #expect(passes.filter { $0["PRIORITY"] == "6" }.count == 2, "the two passes that erased something, at info")
        #expect(!entries.contains { entry in [one, two, three].contains { (entry["MESSAGE"] ?? "").contains($0.fingerprint) } },
                "no erased key named")
        running.cancel()
        _ = try? await running.value
    }

    @Test("a reader holding the database keeps the WAL from being truncated: said, and done at the next pass")
    func walHeldByReader() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyd.sqlite3")
        let store = try KeyStore(path: path)
        let clock = ManualClock()
        let (one, two) = (Self.keys[0], Self.keys[1])
        let first = try await store.addAndActivate(one, source: "one", state: .valid, at: clock.now).activated.id
        _ = try await store.record(check: CheckRecord(
            keyID: first, at: clock.now, outcome: .invalid, httpStatus: 401, latencyMilliseconds: 5, reason: "Invalid API key"))
        try await store.addAndActivate(two, source: "two", state: .valid, at: clock.now)  // retires one, known invalid

        let reader = try #require(ReadTransaction(path: path))
        var report = try await store.applyRetention(now: clock.now)
        #expect(report.secretsErased == 1)
        #expect(report.walPending, "the checkpoint could not truncate the WAL")
        #expect(fileContains(path + "-wal", one.revealSecret()), "the erased secret is still in the WAL while the reader holds it")
        reader.end()
        report = try await store.applyRetention(now: clock.now)
        #expect(report.secretsErased == 0)
        #expect(!report.walPending)
        #expect(!fileContains(path + "-wal", one.revealSecret()) && !fileContains(path, one.revealSecret()))
    }
}

/// A second connection in the middle of a read transaction, as the `sqlite3` tool or
/// a backup would hold one.
private final class ReadTransaction {
    private var db: OpaquePointer?
    private var statement: OpaquePointer?

    init?(path: String) {
        guard sqlite3_open(path, &db) == SQLITE_OK,
            sqlite3_exec(db, "BEGIN", nil, nil, nil) == SQLITE_OK,
            sqlite3_prepare_v2(db, "SELECT id FROM keys", -1, &statement, nil) == SQLITE_OK,
            sqlite3_step(statement) == SQLITE_ROW
        else { return nil }
    }

    func end() {
        sqlite3_finalize(statement)
        statement = nil
        sqlite3_exec(db, "COMMIT", nil, nil, nil)
        sqlite3_close(db)
        db = nil
    }
}
