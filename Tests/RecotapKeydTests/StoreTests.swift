import CSQLite
import Foundation
import Testing

@testable import RecotapKeyd

private let t0 = Date(timeIntervalSince1970: 1_800_000_000)
private func at(_ seconds: TimeInterval) -> Date { t0.addingTimeInterval(seconds) }
private let keyA = APIKey(secret: "rtk_store_test_key_AAAAAAAAAAAAAAAA")
private let keyB = APIKey(secret: "rtk_store_test_key_BBBBBBBBBBBBBBBB")
private let keyC = APIKey(secret: "rtk_store_test_key_CCCCCCCCCCCCCCCC")

@Suite("Store")
struct StoreTests {
    @Test("the active key is published once per commit that touches it: each subscriber sees the current record, then the newest")
    func publishedStream() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("keyd.sqlite3"))
        let subscription = store.current.changes()
        let other = store.current.changes()
        #expect(subscription.poll() == .some(nil), "the current record first: no key")
        #expect(subscription.poll() == nil, "then nothing until a commit")

        let a = try await store.addAndActivate(keyA, source: "a", state: .unverified, at: t0).activated
        let first = try #require(subscription.poll())
        #expect(first?.id == a.id && first?.key == keyA && first?.state == .unverified)
        // A check that changes the state is published; one that does not is not.
        try await store.record(check: CheckRecord(keyID: a.id, at: at(1), outcome: .unreachable, httpStatus: 503, latencyMilliseconds: 1, reason: nil), affectsState: false)
        #expect(subscription.poll() == nil)
        try await store.record(check: CheckRecord(keyID: a.id, at: at(2), outcome: .valid, httpStatus: 200, latencyMilliseconds: 1, reason: nil))
        #expect(try #require(subscription.poll())?.lastVerifiedAt == at(2))

        // A consumer that falls behind skips to the present.
        let b = try await store.addAndActivate(keyB, source: "b", state: .unverified, at: at(3)).activated
        #expect(other.poll()??.id == b.id)
        #expect(other.poll() == nil)

        // As an async sequence: the next commit wakes a waiting consumer.
        #expect(subscription.poll()??.id == b.id)
        async let next = subscription.next()
        let c = try await store.addAndActivate(keyC, source: "c", state: .valid, at: at(4)).activated
        let woken = await next
        #expect(woken??.id == c.id)
        #expect(store.current.version == c.id)
        await store.close()
    }

    @Test("a new store is created 0600 in a 0700 directory, migrated to the current schema, in WAL mode")
    func createsWithModes() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("state/nested/keyd.sqlite3")
        let store = try KeyStore(path: path)
        #expect(fileMode(path) == 0o600)
        #expect(fileMode(dir.file("state/nested")) == 0o700)
        #expect(try await store.activeKey() == nil)
        await store.close()
        #expect(rawSQL(path, "PRAGMA user_version") == [String(KeyStore.schemaVersion)])
        #expect(rawSQL(path, "PRAGMA journal_mode") == ["wal"])
        #expect(Set(rawSQL(path, "SELECT name FROM sqlite_master WHERE type = 'table'")).isSuperset(of: ["keys", "checks"]))
    }

    @Test("an existing directory open to others is tightened to 0700, an existing file to 0600")
    func tightensModes() async throws {
        let dir = try TemporaryDirectory()
        let state = dir.file("state")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        chmod(state, 0o755)
        let path = state + "/keyd.sqlite3"
        _ = try KeyStore(path: path)
        chmod(path, 0o644)
        let store = try KeyStore(path: path)
        await store.close()
        #expect(fileMode(state) == 0o700)
        #expect(fileMode(path) == 0o600)
    }

    @Test("a directory open to others that holds anything but the store is refused, its mode untouched (a store path in /run or /tmp must not make it 0700)")
    func sharedDirectoryRefused() async throws {
        let dir = try TemporaryDirectory()
        let shared = dir.file("shared")
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        chmod(shared, 0o755)
        #expect(FileManager.default.createFile(atPath: shared + "/someone-elses.sock", contents: nil))
        do throws(StoreError) {
            _ = try KeyStore(path: shared + "/keyd.sqlite3")
            Issue.record("a shared directory must be refused")
        } catch {
            #expect(error.code == .unsafeLocation)
            #expect(error.description.contains("someone-elses.sock"))
        }
        #expect(fileMode(shared) == 0o755)
        #expect(!FileManager.default.fileExists(atPath: shared + "/keyd.sqlite3"))
        // Its own files (the database, its WAL and shared memory) do not count.
        let own = dir.file("own")
        try FileManager.default.createDirectory(atPath: own, withIntermediateDirectories: true)
        try await KeyStore(path: own + "/keyd.sqlite3").close()
        chmod(own, 0o755)
        for suffix in ["-wal", "-shm"] { #expect(FileManager.default.createFile(atPath: own + "/keyd.sqlite3" + suffix, contents: nil)) }
        try await KeyStore(path: own + "/keyd.sqlite3").close()
        #expect(fileMode(own) == 0o700)
    }

    @Test("a database file, or a file under one of the store's names in a loose directory, that belongs to another user is refused", .enabled(if: canDropToNobody))
    func foreignFilesRefused() async throws {
        let dir = try TemporaryDirectory()
        // The database file: another user's, even at 0600.
        let state = dir.file("state")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        chmod(state, 0o700)
        #expect(FileManager.default.createFile(atPath: state + "/keyd.sqlite3", contents: nil))
        chmod(state + "/keyd.sqlite3", 0o600)
        chown(state + "/keyd.sqlite3", 65534, 65534)
        do throws(StoreError) {
            _ = try KeyStore(path: state + "/keyd.sqlite3")
            Issue.record("another user's database file must be refused")
        } catch {
            #expect(error.code == .unsafeLocation)
            #expect(error.description.contains("owned by uid 65534"))
        }
        // A WAL planted by another user in a loose directory: not the store's own.
        let loose = dir.file("loose")
        try FileManager.default.createDirectory(atPath: loose, withIntermediateDirectories: true)
        chmod(loose, 0o755)
        #expect(FileManager.default.createFile(atPath: loose + "/keyd.sqlite3-wal", contents: nil))
        chown(loose + "/keyd.sqlite3-wal", 65534, 65534)
        do throws(StoreError) {
            _ = try KeyStore(path: loose + "/keyd.sqlite3")
            Issue.record("a planted WAL must be refused")
        } catch {
            #expect(error.code == .unsafeLocation)
            #expect(error.description.contains("keyd.sqlite3-wal"))
        }
        #expect(fileMode(loose) == 0o755)
    }

    @Test("the directory may be a symlink; the database file may not")
    func symlinks() async throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("private/state"), withIntermediateDirectories: true)
        chmod(dir.file("private/state"), 0o700)
        try FileManager.default.createSymbolicLink(atPath: dir.file("state"), withDestinationPath: dir.file("private/state"))
        try await KeyStore(path: dir.file("state/keyd.sqlite3")).close()
        #expect(fileMode(dir.file("private/state/keyd.sqlite3")) == 0o600)

        try FileManager.default.createSymbolicLink(atPath: dir.file("link.sqlite3"), withDestinationPath: dir.file("private/state/keyd.sqlite3"))
        do throws(StoreError) {
            _ = try KeyStore(path: dir.file("link.sqlite3"))
            Issue.record("a symlinked database file must be refused")
        } catch {
            #expect(error.code == .unsafeLocation)
        }
    }

    @Test("activating a key retires the previous one in the same transaction")
    func activateRetires() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("keyd.sqlite3"))
        let first = try await store.addAndActivate(keyA, source: "a.key", state: .valid, at: at(0))
        #expect(first.retired == nil)
        #expect(first.activated.status == .active)
        #expect(first.activated.key == keyA)
        #expect(first.activated.lastVerifiedAt == at(0))

        let candidate = try await store.addCandidate(keyB, source: "b.key", at: at(10))
        #expect(candidate.status == .candidate)
        #expect(try await store.activeKey()?.fingerprint == keyA.fingerprint, "a candidate is not active")

        let second = try await store.activate(candidate: candidate.id, state: .unverified, at: at(20))
        #expect(second.activated.key == keyB)
        #expect(second.activated.state == .unverified)
        #expect(second.activated.lastVerifiedAt == nil)
        #expect(second.activated.id > first.activated.id, "versions only grow")
        let retired = try #require(second.retired)
        #expect(retired.fingerprint == keyA.fingerprint)
        #expect(retired.status == .retired)
        #expect(retired.retiredAt == at(20))
        #expect(retired.key == nil, "a returned record of a retired key carries no secret")

        let history = try await store.history()
        #expect(history.map(\.status) == [.active, .retired])
        #expect(history.allSatisfy { $0.key == nil })
    }

    @Test("a failed activation changes nothing")
    func failedActivationRollsBack() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("keyd.sqlite3"))
        let first = try await store.addAndActivate(keyA, source: "a.key", state: .valid, at: at(0))
        await #expect(throws: StoreError.self) {
            try await store.activate(candidate: first.activated.id, state: .valid, at: at(5))
        }
        await #expect(throws: StoreError.self) {
            try await store.activate(candidate: 999, state: .valid, at: at(5))
        }
        let active = try #require(try await store.activeKey())
        #expect(active.id == first.activated.id)
        #expect(active.retiredAt == nil)
        #expect(try await store.history().count == 1)
    }

    @Test("the schema itself forbids two active keys")
    func oneActiveKeyConstraint() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyd.sqlite3")
        let store = try KeyStore(path: path)
        try await store.addAndActivate(keyA, source: "a", state: .valid, at: at(0))
        _ = try await store.addCandidate(keyB, source: "b", at: at(1))
        await store.close()
        _ = rawSQL(path, "UPDATE keys SET status = 'active' WHERE status = 'candidate'")
        #expect(rawSQL(path, "SELECT count(*) FROM keys WHERE status = 'active'") == ["1"])
    }

    @Test("closing and reopening keeps keys, states and checks")
    func reopenKeepsEverything() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyd.sqlite3")
        var store = try KeyStore(path: path)
        let activation = try await store.addAndActivate(keyA, source: "a.key", state: .unverified, at: at(0))
        try await store.record(check: CheckRecord(
            keyID: activation.activated.id, at: at(30), outcome: .valid, httpStatus: 200, latencyMilliseconds: 87, reason: nil))
        await store.close()

        store = try KeyStore(path: path)
        let active = try #require(try await store.activeKey())
        #expect(active.key == keyA)
        #expect(active.state == .valid)
        #expect(active.lastVerifiedAt == at(30))
        #expect(active.source == "a.key")
        let checks = try await store.checks(keyID: active.id)
        #expect(checks == [CheckRecord(keyID: active.id, at: at(30), outcome: .valid, httpStatus: 200, latencyMilliseconds: 87, reason: nil)])
    }

    @Test("checks move the key's state as the README's Checking the key says; invalid stays invalid")
    func checkStates() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("keyd.sqlite3"))
        let id = try await store.addAndActivate(keyA, source: "a", state: .unverified, at: at(0)).activated.id
        var record = try await store.record(check: .init(keyID: id, at: at(1), outcome: .unreachable, httpStatus: 503, latencyMilliseconds: 5, reason: "Service Unavailable"))
        #expect(record.state == .unverified)
        record = try await store.record(check: .init(keyID: id, at: at(2), outcome: .valid, httpStatus: 200, latencyMilliseconds: 5, reason: nil))
        #expect(record.state == .valid)
        record = try await store.record(check: .init(keyID: id, at: at(3), outcome: .rateLimited, httpStatus: 429, latencyMilliseconds: 5, reason: nil))
        #expect(record.state == .valid)
        #expect(record.lastVerifiedAt == at(2))
        record = try await store.record(check: .init(keyID: id, at: at(4), outcome: .invalid, httpStatus: 401, latencyMilliseconds: 5, reason: "Invalid API key"))
        #expect(record.state == .invalid)
        #expect(record.invalidSince == at(4))
        record = try await store.record(check: .init(keyID: id, at: at(5), outcome: .valid, httpStatus: 200, latencyMilliseconds: 5, reason: nil))
        #expect(record.state == .invalid, "a regenerated key never comes back")
        #expect(record.invalidSince == at(4))
        #expect(try await store.checks(keyID: id).map(\.outcome) == [.valid, .invalid, .rateLimited, .valid, .unreachable])
    }

    @Test("a database from a newer daemon is refused and left untouched")
    func refusesNewerSchema() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyd.sqlite3")
        try await KeyStore(path: path).close()
        _ = rawSQL(path, "PRAGMA user_version = 99")
        do throws(StoreError) {
            _ = try KeyStore(path: path)
            Issue.record("expected a refusal")
        } catch {
            #expect(error.code == .newerSchema)
            #expect(error.description.contains("99"))
            #expect(error.description.contains("newer recotap-keyd"))
        }
        #expect(rawSQL(path, "PRAGMA user_version") == ["99"])
    }

    @Test("a file that is not a database is refused with a clear error")
    func refusesGarbage() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("keyd.sqlite3", String(repeating: "this is not sqlite\n", count: 400))
        chmod(path, 0o600)
        do throws(StoreError) {
            _ = try KeyStore(path: path)
            Issue.record("expected a refusal")
        } catch {
            #expect(error.code == .notADatabase || error.code == .corrupt)
            #expect(error.description.contains(path))
        }
    }

    @Test("a corrupted database fails quick_check at open")
    func refusesCorrupt() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyd.sqlite3")
        let store = try KeyStore(path: path)
        for index in 0..<200 {
            _ = try await store.addCandidate(APIKey(secret: "rtk_filler_\(index)_" + String(repeating: "x", count: 200)), source: "f", at: at(0))
        }
        await store.close()
        // Overwrite the middle of the file (past the header) with garbage.
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size / 2)
        handle.write(Data(repeating: 0xA5, count: 8192))
        try handle.close()
        do throws(StoreError) {
            _ = try KeyStore(path: path)
            Issue.record("expected a refusal")
        } catch {
            #expect(error.code == .corrupt || error.code == .notADatabase)
        }
    }

    @Test("retention deletes old checks and caps their number")
    func checkRetention() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("keyd.sqlite3"))
        let id = try await store.addAndActivate(keyA, source: "a", state: .valid, at: at(0)).activated.id
        for index in 0..<30 {
            try await store.record(check: .init(keyID: id, at: at(Double(index) * 86_400), outcome: .valid, httpStatus: 200, latencyMilliseconds: 1, reason: nil))
        }
        let policy = RetentionPolicy(checkMaxAge: 10 * 86_400, checkMaxCount: 5, retiredSecretMaxAge: 7 * 86_400)
        let report = try await store.applyRetention(now: at(29 * 86_400), policy: policy)
        let kept = try await store.checks(keyID: id)
        #expect(kept.count == 5)
        #expect(report.checksDeleted == 25)
        #expect(kept.first?.at == at(29 * 86_400), "the newest are kept")
    }

    @Test("secrets of dead keys are erased, from the file too; the active key's never")
    func secretErasure() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyd.sqlite3")
        let store = try KeyStore(path: path)
        let a = try await store.addAndActivate(keyA, source: "a", state: .valid, at: at(0)).activated.id
        try await store.addAndActivate(keyB, source: "b", state: .valid, at: at(100))  // retires A
        // A is confirmed invalid after retirement: its secret goes at the next retention.
        try await store.record(check: .init(keyID: a, at: at(200), outcome: .invalid, httpStatus: 401, latencyMilliseconds: 1, reason: "Invalid API key"))
        let b = try #require(try await store.activeKey()).id
        try await store.addAndActivate(keyC, source: "c", state: .valid, at: at(300))  // retires B, not known invalid

        var report = try await store.applyRetention(now: at(400))
        #expect(report.secretsErased == 1)
        #expect(try await store.key(id: a)?.key == nil)
        #expect(try await store.key(id: a)?.secretErasedAt == at(400))
        #expect(try await store.key(id: b)?.key == keyB, "retired less than 7 days ago and not known invalid: kept")
        #expect(!fileContains(path, keyA.revealSecret()) && !fileContains(path + "-wal", keyA.revealSecret()),
                "the erased secret must not linger in the file or the WAL")

        report = try await store.applyRetention(now: at(300 + 7 * 86_400 + 1))
        #expect(report.secretsErased == 1)
        #expect(try await store.key(id: b)?.key == nil)
        #expect(try await store.activeKey()?.key == keyC)

        try await store.eraseSecret(id: try #require(try await store.activeKey()).id, at: at(500))
        #expect(try await store.activeKey()?.key == keyC, "the active key's secret is never erased")
    }

    @Test("a rejected candidate is kept as a record without its secret")
    func rejectCandidate() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("keyd.sqlite3"))
        let candidate = try await store.addCandidate(keyA, source: "bad.key", at: at(0))
        try await store.reject(candidate: candidate.id, at: at(1), reason: "the API answered 401")
        let record = try #require(try await store.key(id: candidate.id))
        #expect(record.status == .rejected)
        #expect(record.key == nil)
        #expect(record.retireReason == "the API answered 401")
        #expect(try await store.activeKey() == nil)
    }
}

@Suite("store: reinstating a key")
struct StoreReinstateTests {
    @Test("an activation that names the key it replaces changes nothing when another key became active meanwhile")
    func replacingPrecondition() async throws {
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("state/keyd.sqlite3"))
        let a = APIKey(secret: "rtk_reinstate_a_000000001")
        let b = APIKey(secret: "rtk_reinstate_b_000000002")
        let first = try await store.addAndActivate(a, source: "a", state: .valid, at: Date()).activated
        try await store.addAndActivate(b, source: "b", state: .valid, at: Date())
        await #expect(throws: StoreError.self) {
            try await store.addAndActivate(a, source: "late", state: .valid, at: Date(), replacing: .some(first.id))
        }
        #expect(try await store.activeKey()?.fingerprint == b.fingerprint)
        #expect(try await store.history().count == 2, "no row added")
        let previous = try #require(try await store.previousKey())
        #expect(previous.fingerprint == a.fingerprint)
        #expect(previous.key == a, "with its secret, for a rollback")
        let again = try await store.addAndActivate(
            a, source: "rollback to version 1", state: .valid, at: Date(), replacing: .some(try await store.activeKey()?.id))
        #expect(again.activated.id == 3)
        #expect(try await store.previousKey()?.fingerprint == b.fingerprint, "the previous key of a rolled-back key is the one it replaced")
    }
}
