import Foundation
import Testing

@testable import RecotapKeyd

/// Secrets sealed at rest under a store key given as a systemd credential, with real
/// SQLite files (README "Sealing the store").
@Suite("Sealing the store (real SQLite files)")
struct SealTests {
    static let one = APIKey(secret: "rtk_sealed_key_one_0123456789")
    static let two = APIKey(secret: "rtk_sealed_key_two_9876543210")
    static let hostA = SecretSeal(credential: Array(repeating: 0xA5, count: 32))
    static let hostB = SecretSeal(credential: Array(repeating: 0x5B, count: 32))

    private func files(_ path: String) -> [String] { [path, path + "-wal"] }

    /// A store file at a new path holding `keys` (the last one active), closed again.
    private func storeFile(_ dir: TemporaryDirectory, holding keys: [APIKey], seal: SecretSeal? = nil) async throws -> String {
        let path = dir.file("state/keyd.sqlite3")
        let store = try KeyStore(path: path, seal: seal)
        for (index, key) in keys.enumerated() {
            try await store.addAndActivate(key, source: "k\(index)", state: .valid, at: Date())
        }
        await store.close()
        return path
    }

    private func anyFile(_ path: String, contains secret: APIKey) -> Bool {
        files(path).contains { fileContains($0, secret.revealSecret()) }
    }

    @Test("with a store key every secret is stored sealed, bound to its fingerprint: neither the database nor its WAL holds it; the store gives it back")
    func sealed() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("state/keyd.sqlite3")
        let store = try KeyStore(path: path, seal: Self.hostA)
        #expect(store.sealReport == SealReport(sealing: true, keyID: Self.hostA.keyID))
        try await store.addAndActivate(Self.one, source: "a", state: .valid, at: Date())
        try await store.addAndActivate(Self.two, source: "b", state: .valid, at: Date())
        #expect(try await store.activeKey()?.key == Self.two)
        #expect(try await store.previousKey()?.key == Self.one)
        #expect(store.current.record?.key == Self.two)
        let stored = rawSQL(path, "SELECT sealed_secret FROM keys ORDER BY id")
        #expect(rawSQL(path, "SELECT count(*) FROM keys WHERE secret IS NOT NULL") == ["0"])
        #expect(stored.count == 2)
        #expect(stored.allSatisfy { $0.hasPrefix("sealed:v1:\(Self.hostA.keyID):") }, "\(stored.map { $0.prefix(30) })")
        #expect(!anyFile(path, contains: Self.one) && !anyFile(path, contains: Self.two))
        await store.close()

        // The old key's sealed secret and fingerprint copied into the active row (an
        // attacker with write access to the file, bringing back a key of their choice):
        // bound to its row id, it does not open.
        _ = rawSQL(path, "UPDATE keys SET sealed_secret = (SELECT sealed_secret FROM keys WHERE id = 1), fingerprint = (SELECT fingerprint FROM keys WHERE id = 1) WHERE id = 2")
        do {
            let reopened = try KeyStore(path: path, seal: Self.hostA)
            let active = try #require(try await reopened.activeKey())
            #expect(active.key == nil)
            #expect(active.secretUnavailable?.contains("altered or moved from another row") == true)
            #expect(try await reopened.key(id: 1)?.key == Self.one, "the row it came from still opens")
            await reopened.close()
        }

        // One bit of the ciphertext changed: the tag does not verify.
        let original = rawSQL(path, "SELECT sealed_secret FROM keys WHERE id = 1")[0]
        var bytes = Array(Data(base64Encoded: String(original.split(separator: ":")[3]))!)
        bytes[14] ^= 0x01
        let altered = original.split(separator: ":")[0...2].joined(separator: ":") + ":" + Data(bytes).base64EncodedString()
        _ = rawSQL(path, "UPDATE keys SET sealed_secret = '\(altered)' WHERE id = 1")
        let tampered = try KeyStore(path: path, seal: Self.hostA)
        #expect(try await tampered.key(id: 1)?.secretUnavailable?.contains("does not open under this store key") == true)
        await tampered.close()
    }

    @Test("started without the store key, or with another host's: no key served, the rows untouched, no new secret stored in the clear beside them")
    func withoutTheStoreKey() async throws {
        let dir = try TemporaryDirectory()
        let path = try await storeFile(dir, holding: [Self.one], seal: Self.hostA)
        let before = rawSQL(path, "SELECT sealed_secret FROM keys")

        let bare = try KeyStore(path: path)
        #expect(bare.sealReport == SealReport(sealing: false, keyID: nil, unreadable: 1))
        let active = try #require(bare.current.record)
        #expect(active.key == nil)
        #expect(active.fingerprint == Self.one.fingerprint)
        #expect(active.secretUnavailable?.contains("started without its store key") == true)
        await #expect(throws: StoreError.self) {
            try await bare.addAndActivate(Self.two, source: "b", state: .valid, at: Date())
        }
        #expect(!anyFile(path, contains: Self.two))
        await bare.close()
        #expect(rawSQL(path, "SELECT sealed_secret FROM keys") == before)

        let other = try KeyStore(path: path, seal: Self.hostB)
        #expect(other.sealReport.unreadable == 1)
        #expect(other.current.record?.secretUnavailable?.contains("sealed under another store key (\(Self.hostA.keyID))") == true)
        await other.close()
        #expect(rawSQL(path, "SELECT sealed_secret FROM keys") == before)
    }

    @Test("a store written in the clear is sealed at the first start with a store key: the clear bytes leave both files")
    func sealedAtStart() async throws {
        let dir = try TemporaryDirectory()
        let path = try await storeFile(dir, holding: [Self.one, Self.two])
        #expect(anyFile(path, contains: Self.one) && anyFile(path, contains: Self.two), "the control: stored in the clear")
        let store = try KeyStore(path: path, seal: Self.hostA)
        #expect(store.sealReport.sealedNow == 2)
        #expect(try await store.activeKey()?.key == Self.two)
        #expect(!anyFile(path, contains: Self.one) && !anyFile(path, contains: Self.two))
        #expect(rawSQL(path, "SELECT count(*) FROM keys WHERE secret IS NOT NULL") == ["0"])
        await store.close()
    }

    @Test("a store of schema version 1 (before sealing) is migrated: its secrets in the clear stay readable, then sealed with a store key")
    func fromVersionOne() async throws {
        let dir = try TemporaryDirectory()
        let path = try await storeFile(dir, holding: [Self.one])
        _ = rawSQL(path, "ALTER TABLE keys DROP COLUMN sealed_secret")
        _ = rawSQL(path, "PRAGMA user_version = 1")
        #expect(rawSQL(path, "PRAGMA user_version") == ["1"])
        do {
            let store = try KeyStore(path: path)
            #expect(try await store.activeKey()?.key == Self.one)
            await store.close()
        }
        #expect(rawSQL(path, "PRAGMA user_version") == ["2"])
        let sealed = try KeyStore(path: path, seal: Self.hostA)
        #expect(sealed.sealReport.sealedNow == 1)
        #expect(try await sealed.activeKey()?.key == Self.one)
        await sealed.close()
    }

    @Test("a key whose text looks like a sealed secret is just a key: stored and served as written, in the clear or sealed")
    func keyLookingSealed() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("state/keyd.sqlite3")
        let lookalike = APIKey(secret: "sealed:v1:0123456789abcdef:AAAA")
        do {
            let store = try KeyStore(path: path)
            try await store.addAndActivate(lookalike, source: "a", state: .unverified, at: Date())
            await store.close()
        }
        let bare = try KeyStore(path: path)
        #expect(bare.sealReport.unreadable == 0)
        #expect(bare.current.record?.key == lookalike)
        try await bare.addAndActivate(Self.one, source: "b", state: .valid, at: Date())
        await bare.close()
        let sealed = try KeyStore(path: path, seal: Self.hostA)
        #expect(sealed.sealReport.sealedNow == 2)
        #expect(try await sealed.previousKey()?.key == lookalike)
        await sealed.close()
    }

    @Test("a new store key with the previous one given too: every secret re-sealed at start; then the previous one is not needed")
    func changingTheStoreKey() async throws {
        let dir = try TemporaryDirectory()
        let path = try await storeFile(dir, holding: [Self.one], seal: Self.hostA)
        let rotating = SecretSeal(credential: Array(repeating: 0x5B, count: 32), previous: Array(repeating: 0xA5, count: 32))
        do {
            let store = try KeyStore(path: path, seal: rotating)
            #expect(store.sealReport.resealed == 1)
            #expect(try await store.activeKey()?.key == Self.one)
            await store.close()
        }
        let store = try KeyStore(path: path, seal: Self.hostB)
        #expect(store.sealReport.unreadable == 0)
        #expect(try await store.activeKey()?.key == Self.one)
        #expect(rawSQL(path, "SELECT sealed_secret FROM keys").first?.hasPrefix("sealed:v1:\(Self.hostB.keyID):") == true)
        await store.close()
    }

    @Test("the credential: absent means no sealing; too short, or only the previous one, stops the start with what is wrong")
    func loadingTheCredential() throws {
        let dir = try TemporaryDirectory()
        guard case .none = try SecretSeal.load(credentialsDirectory: nil) else { Issue.record("sealed without a directory"); return }
        guard case .none = try SecretSeal.load(credentialsDirectory: dir.path) else { Issue.record("sealed without the file"); return }
        try dir.write("store-key.previous", String(repeating: "p", count: 40))
        #expect(throws: SecretSeal.CredentialError.self) { try SecretSeal.load(credentialsDirectory: dir.path) }
        try dir.write("store-key", "short\n")
        do {
            _ = try SecretSeal.load(credentialsDirectory: dir.path)
            Issue.record("a 6-byte store key was taken")
        } catch {
            #expect(error.description.contains("holds 6 bytes; a store key needs at least 32"))
        }
        try dir.write("store-key", String(repeating: "k", count: 32))
        guard case .sealed(let seal) = try SecretSeal.load(credentialsDirectory: dir.path) else {
            Issue.record("not sealed with a good credential")
            return
        }
        #expect(seal.keyID == SecretSeal(credential: Array(String(repeating: "k", count: 32).utf8)).keyID)
        #expect(seal.previous != nil)
    }
}

/// The real daemon given a store key the way systemd gives credentials.
@Suite("Sealing the store (real binary)", .enabled(if: haveCurl, "needs curl"))
struct SealedDaemonTests {
    static let key = "rtk_sealed_daemon_key_0123456"
    static let another = "rtk_another_key_0000000001"

    @Test("with $CREDENTIALS_DIRECTORY/store-key the key is served and sealed in the file; a copy of the file started without it serves no key and says why, rows untouched, a new key left in the spool")
    func sealedDaemon() async throws {
        let credentials = try TemporaryDirectory()
        try credentials.write("store-key", String(repeating: "c", count: 48))
        let served = try await ServedDaemon(validKeys: [Self.key], environment: ["CREDENTIALS_DIRECTORY": credentials.path])
        try await served.activate(Self.key)
        #expect(try await served.curl("/v1/key").body == Data(Self.key.utf8))
        #expect(try await served.curl("/v1/status").json?["store_sealed"]?.bool == true)
        #expect(try await served.logged("secrets in the store are sealed under store key"))
        let database = served.dir.file("state/keyd.sqlite3")
        #expect(!fileContains(database, Self.key) && !fileContains(database + "-wal", Self.key))
        #expect(await served.finish() == 0)
        let rows = rawSQL(database, "SELECT sealed_secret FROM keys")

        // A copy of the database file (a backup, another host): no store key.
        let elsewhere = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: elsewhere.file("state"), withIntermediateDirectories: true)
        chmod(elsewhere.path, 0o755)
        try FileManager.default.copyItem(atPath: database, toPath: elsewhere.file("state/keyd.sqlite3"))
        let copy = elsewhere.file("state/keyd.sqlite3")
        let bare = try await ServedDaemon(validKeys: [Self.key, Self.another], directory: elsewhere)
        let answer = try await bare.curl("/v1/key")
        #expect(answer.status == 503)
        #expect(answer.json?["error"]?.string == "sealed")
        #expect(answer.text.contains("started without its store key"))
        #expect(try await bare.curl("/healthz").status == 503)
        #expect(try await bare.curl("/v1/status").json?["key_unavailable"]?.string?.contains("sealed") == true)
        #expect(try await bare.logged("1 secret(s) in the store are sealed under a store key this daemon was not given"))
        _ = try SpoolWriter.write(APIKey(secret: Self.another), into: bare.spool)
        #expect(try await bare.logged("no new secret is stored in the clear beside them"))
        let waiting = try FileManager.default.contentsOfDirectory(atPath: bare.spool)
        #expect(waiting.contains { $0.hasSuffix(".key") }, "the file stays in the spool: nothing lost")
        #expect(bare.mock.requests().isEmpty, "nothing sent: no readable key to check, and the dropped key not asked about")
        #expect(await bare.finish() == 0)
        #expect(rawSQL(copy, "SELECT sealed_secret FROM keys") == rows, "the sealed rows untouched")

        // The original files, with the store key again: served.
        let again = try await ServedDaemon(
            validKeys: [Self.key], environment: ["CREDENTIALS_DIRECTORY": credentials.path], directory: served.dir)
        #expect(try await again.curl("/v1/key").body == Data(Self.key.utf8))
        #expect(await again.finish() == 0)
        #expect(!served.daemon.output.contains(Self.key) && !bare.daemon.output.contains(Self.key))
        #expect(!bare.daemon.output.contains(Self.another))
    }

    @Test("without a store key the daemon says once at start that the store is not sealed")
    func unsealed() async throws {
        let served = try await ServedDaemon()
        #expect(try await served.logged("the store is not sealed"))
        #expect(try await served.curl("/v1/status").json?["store_sealed"]?.bool == false)
        #expect(await served.finish() == 0)
        #expect(served.daemon.output.components(separatedBy: "the store is not sealed").count == 2)
    }
}
