import CSQLite
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's SQLite store of keys and checks (README, "The store").
///
/// The file is created 0600 in a 0700 directory; WAL; `synchronous=FULL` for every
/// transaction that changes which key is active, so a key switch survives power loss
/// before the spool file is removed; `secure_delete` so an erased secret does not linger
/// in free pages. Opening runs `quick_check` and refuses a database written by a
/// newer version of the daemon instead of guessing at its schema.
public actor KeyStore {
    /// The schema version this build writes. Each entry of ``migrations`` moves
    /// `PRAGMA user_version` up by one.
    public static let schemaVersion = Int64(migrations.count)

    static let migrations: [String] = [
        """
        CREATE TABLE keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            fingerprint TEXT NOT NULL,
            secret TEXT,
            source TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('candidate', 'active', 'retired', 'rejected')),
            state TEXT NOT NULL CHECK (state IN ('unverified', 'valid', 'invalid')),
            added_at REAL NOT NULL,
            activated_at REAL,
            retired_at REAL,
            retire_reason TEXT,
            last_verified_at REAL,
            invalid_since REAL,
            secret_erased_at REAL
        );
        CREATE UNIQUE INDEX keys_one_active ON keys (status) WHERE status = 'active';
        CREATE INDEX keys_fingerprint ON keys (fingerprint);
        CREATE TABLE checks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key_id INTEGER NOT NULL REFERENCES keys (id),
            at REAL NOT NULL,
            outcome TEXT NOT NULL,
            http_status INTEGER,
            latency_ms INTEGER,
            reason TEXT
        );
        CREATE INDEX checks_key_at ON checks (key_id, at);
        """,
        // 2: secrets sealed under a store key live in a column of their own (README
        // "Sealing the store"): what a secret is never depends on its bytes, and a
        // daemon from before sealing refuses this store instead of serving a sealed
        // secret as if it were the key.
        """
        ALTER TABLE keys ADD COLUMN sealed_secret TEXT;
        """,
    ]

    private let connection: SQLiteConnection
    public nonisolated let path: String
    /// The active key as last committed, for the sockets (see ``CurrentKey``).
    public nonisolated let current = CurrentKey()
    /// Seals secrets at rest (`nil`: stored in the clear).
    private let seal: SecretSeal?

    /// Why no new secret can be stored (a sealed store opened without its store key),
    /// or `nil`. Known at open: the spool leaves a file without asking the API.
    public nonisolated var refusesNewSecrets: String? {
        guard seal == nil, sealReport.unreadable > 0 else { return nil }
        return "the store holds sealed secrets and recotap-keyd was started without its store key (credential \(SecretSeal.credentialName)); no new secret is stored in the clear beside them — start it with the credential"
    }
    /// What opening found of the sealing, for the start-up log and `/v1/status`.
    public nonisolated let sealReport: SealReport

    /// Opens (creating if needed) the store at `path`. With `seal`, every secret held
    /// in the clear (or under the previous store key) is sealed under it before
    /// anything else reads the store.
    public init(path: String, seal: SecretSeal? = nil) throws(StoreError) {
        self.path = path
        self.seal = seal
        let resolved = try Self.prepareLocation(path)
        let connection = try SQLiteConnection(path: resolved)
        do throws(StoreError) {
            try Self.verifyIntegrity(connection)
            let version = try Self.userVersion(connection)
            if version > Self.schemaVersion {
                throw StoreError(
                    .newerSchema, path: path,
                    message: "schema version \(version) was written by a newer recotap-keyd (this one knows up to \(Self.schemaVersion)); refusing to open it — upgrade recotap-keyd or restore a matching backup"
                )
            }
            try connection.query("PRAGMA journal_mode = WAL")
            try connection.execute("PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;")
            try Self.migrate(connection, from: version)
            (sealReport, walOwesTruncate) = try Self.applySeal(seal, connection)
        } catch {
            connection.close()
            throw error
        }
        self.connection = connection
        current.publish(try? activeKeyRecord(connection))
    }

    /// Closes the connection; later calls fail with ``StoreError/Code/closed``.
    public func close() { connection.close() }

    // MARK: - Opening

    /// Creates or checks the directory and the file; returns the path with the
    /// directory's symlinks resolved (SQLite is opened with `SQLITE_OPEN_NOFOLLOW`,
    /// which refuses a symlink anywhere in the path).
    private static func prepareLocation(_ path: String) throws(StoreError) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if !fm.fileExists(atPath: directory, isDirectory: &isDirectory) {
            do {
                try fm.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw StoreError(.cannotOpen, path: path, message: "cannot create directory \(directory): \(error.localizedDescription)")
            }
        }
        var info = stat()
        // The directory may be a symlink (StateDirectory= with DynamicUser= makes one);
        // what matters is the directory it leads to. The file itself is never followed.
        guard stat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw StoreError(.unsafeLocation, path: path, message: "\(directory) is not a directory")
        }
        if info.st_mode & 0o077 != 0 {
            // Created by someone else with a loose mode (StateDirectory= defaults to
            // 0755): tighten it if it is ours and holds nothing but the store, refuse
            // otherwise. A directory shared with others (/run, /tmp, a home) is never
            // made 0700 under them: as root, that would lock every other user out.
            // The store's own names count only as regular files of the daemon's user:
            // one planted by another user under such a name is someone else's file.
            let own = Set(["", "-wal", "-shm", "-journal"].map { (path as NSString).lastPathComponent + $0 })
            let entries: [String]
            do {
                entries = try fm.contentsOfDirectory(atPath: directory)
            } catch {
                throw StoreError(.unsafeLocation, path: path, message: "directory \(directory) is accessible to other users and cannot be listed: \(error.localizedDescription)")
            }
            let others = entries.filter { name in
                var entry = stat()
                return !own.contains(name) || lstat(directory + "/" + name, &entry) != 0
                    || entry.st_mode & S_IFMT != S_IFREG || entry.st_uid != geteuid()
            }.sorted()
            if !others.isEmpty {
                let named = others.prefix(3).joined(separator: ", ") + (others.count > 3 ? ", …" : "")
                throw StoreError(
                    .unsafeLocation, path: path,
                    message: "directory \(directory) is accessible to other users (mode \(String(info.st_mode & 0o777, radix: 8))) and holds other files (\(named)); give the store a directory of its own, mode 0700, owned by the daemon's user"
                )
            }
            guard info.st_uid == geteuid(), chmod(directory, 0o700) == 0 else {
                throw StoreError(
                    .unsafeLocation, path: path,
                    message: "directory \(directory) is accessible to other users (mode \(String(info.st_mode & 0o777, radix: 8))) and cannot be tightened; make it 0700 and owned by the daemon's user"
                )
            }
        }
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFREG else {
                throw StoreError(.unsafeLocation, path: path, message: "exists and is not a regular file")
            }
            // Another user's database, whatever its mode, could hold keys they chose
            // or be read through a descriptor they kept.
            guard info.st_uid == geteuid() else {
                throw StoreError(.unsafeLocation, path: path, message: "is owned by uid \(info.st_uid), not the daemon's user (uid \(geteuid())); the store must be the daemon's own file")
            }
            if info.st_mode & 0o077 != 0 {
                guard chmod(path, 0o600) == 0 else {
                    throw StoreError(.unsafeLocation, path: path, message: "is readable by other users and cannot be made 0600; make it 0600 and owned by the daemon's user")
                }
            }
        } else {
            let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else {
                throw StoreError(.cannotOpen, path: path, message: "cannot create the file: \(String(cString: strerror(errno)))")
            }
            Glibc.close(fd)
        }
        guard let real = realpath(directory, nil) else {
            throw StoreError(.cannotOpen, path: path, message: "cannot resolve \(directory): \(String(cString: strerror(errno)))")
        }
        defer { free(real) }
        return String(cString: real) + "/" + (path as NSString).lastPathComponent
    }

    /// Seals the secrets held in the clear and re-seals those under the previous
    /// store key, in one durable transaction; then, whenever there is a store key,
    /// checkpoints and truncates the WAL so no clear bytes stay in either file (also
    /// after a crash between an earlier sealing's commit and its checkpoint). Rows it
    /// cannot open are left untouched and counted. Returns the report and whether the
    /// truncation still owes (a reader held the database: retried by retention).
    private static func applySeal(_ seal: SecretSeal?, _ connection: SQLiteConnection) throws(StoreError) -> (SealReport, walOwed: Bool) {
        var report = SealReport(sealing: seal != nil, keyID: seal?.keyID)
        let rows = try connection.query(
            "SELECT id, fingerprint, secret, sealed_secret FROM keys WHERE secret IS NOT NULL OR sealed_secret IS NOT NULL")
        var updates: [(Int64, String)] = []
        for row in rows {
            guard let id = row.int("id"), let fingerprint = row.text("fingerprint") else { continue }
            let sealedNow = row.text("sealed_secret")
            guard let seal else {
                if sealedNow != nil { report.unreadable += 1 }
                continue
            }
            let secret: String
            if let sealedNow {
                if SecretSeal.keyID(of: sealedNow) == seal.keyID {
                    // Already sealed under this key; a clear copy beside it (only a
                    // hand edit makes one) goes.
                    if row.text("secret") != nil { updates.append((id, sealedNow)) }
                    continue
                }
                guard case .success(let opened) = SecretSeal.open(sealedNow, id: id, fingerprint: fingerprint, seal: seal) else {
                    report.unreadable += 1
                    continue
                }
                secret = opened
                report.resealed += 1
            } else if let clear = row.text("secret") {
                secret = clear
                report.sealedNow += 1
            } else {
                continue
            }
            do {
                updates.append((id, try seal.seal(secret, id: id, fingerprint: fingerprint)))
            } catch {
                throw StoreError(.sealed, path: connection.path, message: "cannot seal the secret of key \(id): \(error)")
            }
        }
        guard seal != nil else { return (report, false) }
        if !updates.isEmpty {
            try connection.execute("PRAGMA synchronous = FULL")
            defer { try? connection.execute("PRAGMA synchronous = NORMAL") }
            try connection.execute("BEGIN IMMEDIATE")
            do throws(StoreError) {
                for (id, sealed) in updates {
                    try connection.query(
                        "UPDATE keys SET sealed_secret = ?, secret = NULL WHERE id = ?", [.text(sealed), .integer(id)])
                }
                try connection.execute("COMMIT")
            } catch {
                try? connection.execute("ROLLBACK")
                throw error
            }
        }
        let busy = try checkpoint(connection)
        return (report, busy)
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` without waiting for a reader; `true` when a
    /// reader kept it from truncating (SQLite answers `busy` rather than an error).
    private static func checkpoint(_ connection: SQLiteConnection) throws(StoreError) -> Bool {
        try connection.query("PRAGMA busy_timeout = 0")
        let result: Result<[SQLiteRow], StoreError>
        do {
            result = .success(try connection.query("PRAGMA wal_checkpoint(TRUNCATE)"))
        } catch {
            result = .failure(error)
        }
        try connection.query("PRAGMA busy_timeout = \(SQLiteConnection.busyTimeoutMilliseconds)")
        return (try result.get().first?.int("busy") ?? 0) != 0
    }

    private static func verifyIntegrity(_ connection: SQLiteConnection) throws(StoreError) {
        let rows = try connection.query("PRAGMA quick_check")
        let results = rows.compactMap { $0.values.values.first }.compactMap { value -> String? in
            if case .text(let text) = value { return text }
            return nil
        }
        guard results == ["ok"] else {
            throw StoreError(
                .corrupt, path: connection.path,
                message: "integrity check failed: \(results.prefix(3).joined(separator: "; ")); stop the daemon, move the file aside and restore a backup (the daemon will start empty without it)"
            )
        }
    }

    private static func userVersion(_ connection: SQLiteConnection) throws(StoreError) -> Int64 {
        try connection.query("PRAGMA user_version").first?.values.values.first.flatMap {
            if case .integer(let number) = $0 { return number }
            return nil
        } ?? 0
    }

    private static func migrate(_ connection: SQLiteConnection, from version: Int64) throws(StoreError) {
        guard version < schemaVersion else { return }
        try connection.execute("PRAGMA synchronous = FULL")
        defer { try? connection.execute("PRAGMA synchronous = NORMAL") }
        for step in Int(version)..<migrations.count {
            try connection.execute("BEGIN IMMEDIATE")
            do throws(StoreError) {
                try connection.execute(migrations[step])
                try connection.execute("PRAGMA user_version = \(step + 1)")
                try connection.execute("COMMIT")
            } catch {
                try? connection.execute("ROLLBACK")
                throw error
            }
        }
    }

    // MARK: - Transactions

    /// Runs `body` in one transaction; `durable` makes the commit wait for the disk
    /// (`synchronous=FULL`) — used for every change of the active key.
    @discardableResult
    private func transaction<T>(durable: Bool, _ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        if durable { try connection.execute("PRAGMA synchronous = FULL") }
        defer { if durable { try? connection.execute("PRAGMA synchronous = NORMAL") } }
        try connection.execute("BEGIN IMMEDIATE")
        do throws(StoreError) {
            let result = try body()
            try connection.execute("COMMIT")
            return result
        } catch {
            try? connection.execute("ROLLBACK")
            throw error
        }
    }

    // MARK: - Reading

    private static let columns =
        "id, fingerprint, secret, sealed_secret, source, status, state, added_at, activated_at, retired_at, retire_reason, last_verified_at, invalid_since, secret_erased_at"

    private static func record(from row: SQLiteRow, includeSecret: Bool, seal: SecretSeal?) -> KeyRecord {
        let id = row.int("id") ?? 0
        let fingerprint = row.text("fingerprint") ?? ""
        var key: APIKey?
        var unavailable: String?
        if includeSecret, let sealed = row.text("sealed_secret") {
            switch SecretSeal.open(sealed, id: id, fingerprint: fingerprint, seal: seal) {
            case .success(let secret): key = APIKey(secret: secret)
            case .failure(let failure): unavailable = failure.description
            }
        } else if includeSecret, let clear = row.text("secret") {
            key = APIKey(secret: clear)
        }
        return KeyRecord(
            id: id,
            fingerprint: fingerprint,
            key: key,
            source: row.text("source") ?? "",
            status: row.text("status").flatMap(KeyStatus.init(rawValue:)) ?? .retired,
            state: row.text("state").flatMap(KeyState.init(rawValue:)) ?? .unverified,
            addedAt: row.date("added_at") ?? Date(timeIntervalSince1970: 0),
            activatedAt: row.date("activated_at"),
            retiredAt: row.date("retired_at"),
            retireReason: row.text("retire_reason"),
            lastVerifiedAt: row.date("last_verified_at"),
            invalidSince: row.date("invalid_since"),
            secretErasedAt: row.date("secret_erased_at"),
            secretUnavailable: unavailable
        )
    }

    private func record(from row: SQLiteRow, includeSecret: Bool) -> KeyRecord {
        Self.record(from: row, includeSecret: includeSecret, seal: seal)
    }

    /// The active key, with its secret.
    public func activeKey() throws(StoreError) -> KeyRecord? {
        try activeKeyRecord(connection)
    }

    private nonisolated func activeKeyRecord(_ connection: SQLiteConnection) throws(StoreError) -> KeyRecord? {
        try connection.query("SELECT \(Self.columns) FROM keys WHERE status = 'active'")
            .first.map { Self.record(from: $0, includeSecret: true, seal: seal) }
    }

    /// Tells ``current`` what is active now; called after every committed change that
    /// can touch the active key.
    private func publishActive() {
        // A failed read keeps the last snapshot: the commit before it succeeded, and
        // the next change publishes again.
        do { current.publish(try activeKey()) } catch {}
    }

    /// One key by id, with its secret (if not erased).
    public func key(id: Int64) throws(StoreError) -> KeyRecord? {
        try key(id: id, includeSecret: true)
    }

    /// Without its secret when the caller has no use for it (a sealed one is not opened).
    private func key(id: Int64, includeSecret: Bool) throws(StoreError) -> KeyRecord? {
        try connection.query("SELECT \(Self.columns) FROM keys WHERE id = ?", [.integer(id)])
            .first.map { record(from: $0, includeSecret: includeSecret) }
    }

    /// The newest key record with this fingerprint, without its secret.
    public func key(fingerprint: String) throws(StoreError) -> KeyRecord? {
        try connection.query(
            "SELECT \(Self.columns) FROM keys WHERE fingerprint = ? ORDER BY id DESC LIMIT 1", [.text(fingerprint)]
        ).first.map { record(from: $0, includeSecret: false) }
    }

    /// The key retired last — the one the active key replaced — with its secret if it
    /// is still held; `nil` when no key was ever retired. A key with the active key's
    /// fingerprint (a re-verified key's older row) is not a previous key.
    public func previousKey() throws(StoreError) -> KeyRecord? {
        try connection.query(
            """
            SELECT \(Self.columns) FROM keys
            WHERE status = 'retired'
              AND fingerprint NOT IN (SELECT fingerprint FROM keys WHERE status = 'active')
            ORDER BY retired_at DESC, id DESC LIMIT 1
            """
        ).first.map { record(from: $0, includeSecret: true) }
    }

    /// Every key record, newest first, without secrets.
    public func history(limit: Int = 100) throws(StoreError) -> [KeyRecord] {
        try connection.query("SELECT \(Self.columns) FROM keys ORDER BY id DESC LIMIT ?", [.integer(Int64(limit))])
            .map { record(from: $0, includeSecret: false) }
    }

    /// The checks of one key, newest first.
    public func checks(keyID: Int64, limit: Int = 100) throws(StoreError) -> [CheckRecord] {
        try connection.query(
            "SELECT key_id, at, outcome, http_status, latency_ms, reason FROM checks WHERE key_id = ? ORDER BY at DESC, id DESC LIMIT ?",
            [.integer(keyID), .integer(Int64(limit))]
        ).map { row in
            CheckRecord(
                keyID: row.int("key_id") ?? keyID,
                at: row.date("at") ?? Date(timeIntervalSince1970: 0),
                outcome: row.text("outcome").flatMap(CheckOutcome.init(rawValue:)) ?? .unreachable,
                httpStatus: row.int("http_status").map(Int.init),
                latencyMilliseconds: row.int("latency_ms").map(Int.init),
                reason: row.text("reason")
            )
        }
    }

    /// A cheap round trip, for the watchdog: proves the store still answers.
    public func ping() throws(StoreError) {
        try connection.query("SELECT 1")
    }

    // MARK: - Changing

    /// Records a key that arrived but is not yet active.
    public func addCandidate(_ key: APIKey, source: String, at: Date) throws(StoreError) -> KeyRecord {
        try transaction(durable: true) { () throws(StoreError) -> KeyRecord in
            try insertCandidate(key, source: source, at: at)
        }
    }

    private func insertCandidate(_ key: APIKey, source: String, at: Date) throws(StoreError) -> KeyRecord {
        if let refusal = refusesNewSecrets {
            // A sealed store started without its store key: taking a secret in the
            // clear would quietly undo the sealing the operator set up.
            throw StoreError(.sealed, path: path, message: refusal)
        }
        // Sealed, the secret is bound to its row id: known once the row exists (the
        // same transaction, so the row never exists without its secret).
        try connection.query(
            "INSERT INTO keys (fingerprint, secret, source, status, state, added_at) VALUES (?, ?, ?, 'candidate', 'unverified', ?)",
            [.text(key.fingerprint), seal == nil ? .text(key.revealSecret()) : .null, .text(source), SQLiteValue(at)]
        )
        let id = connection.lastInsertRowID
        if let seal {
            let sealed: String
            do {
                sealed = try seal.seal(key.revealSecret(), id: id, fingerprint: key.fingerprint)
            } catch {
                throw StoreError(.sealed, path: path, message: "cannot seal the secret: \(error)")
            }
            try connection.query("UPDATE keys SET sealed_secret = ? WHERE id = ?", [.text(sealed), .integer(id)])
        }
        guard let inserted = try self.key(id: id) else {
            throw StoreError(.notFound, path: path, message: "key \(id) vanished after insert")
        }
        return inserted
    }

    /// Makes a candidate the active key and retires the previous one, in one durable
    /// transaction: after a crash either the old or the new key is active, never both
    /// and never neither. `state` is what is known of the new key (`valid` when it was
    /// verified before activation, `unverified` when the API could not be reached).
    public func activate(
        candidate id: Int64, state: KeyState, at: Date, retireReason: String = "replaced"
    ) throws(StoreError) -> Activation {
        let activation = try transaction(durable: true) { () throws(StoreError) -> Activation in
            try promote(candidate: id, state: state, at: at, retireReason: retireReason)
        }
        publishActive()
        return activation
    }

    private func promote(candidate id: Int64, state: KeyState, at: Date, retireReason: String) throws(StoreError) -> Activation {
        guard let candidate = try key(id: id, includeSecret: false) else {
            throw StoreError(.notFound, path: path, message: "no key with id \(id)")
        }
        guard candidate.status == .candidate else {
            throw StoreError(.invalidTransition, path: path, message: "key \(id) is \(candidate.status.rawValue), not a candidate")
        }
        var retired: KeyRecord?
        if let previous = try activeKey() {
            try connection.query(
                "UPDATE keys SET status = 'retired', retired_at = ?, retire_reason = ? WHERE id = ?",
                [SQLiteValue(at), .text(retireReason), .integer(previous.id)])
            retired = try key(id: previous.id, includeSecret: false)
        }
        try connection.query(
            "UPDATE keys SET status = 'active', state = ?, activated_at = ?, last_verified_at = ? WHERE id = ?",
            [.text(state.rawValue), SQLiteValue(at), state == .valid ? SQLiteValue(at) : .null, .integer(id)])
        guard let activated = try key(id: id) else {
            throw StoreError(.notFound, path: path, message: "key \(id) vanished during activation")
        }
        return Activation(activated: activated, retired: retired)
    }

    /// Adds and activates a key in one durable transaction. `verification`, the check
    /// made before activation (its `keyID` is replaced by the new key's), is recorded
    /// in the same transaction: whoever follows ``current`` sees the key and its first
    /// check together. `replacing`: only if the active key is still this one (its id;
    /// `.some(nil)`: only if there is none) — otherwise ``StoreError/Code/invalidTransition``
    /// and nothing changes. A re-verification or a rollback decided on what was active
    /// when it asked the API, and must not retire a key activated meanwhile.
    @discardableResult
    public func addAndActivate(
        _ key: APIKey, source: String, state: KeyState, at: Date, retireReason: String = "replaced",
        verification: CheckRecord? = nil, replacing expected: Int64?? = .none
    ) throws(StoreError) -> Activation {
        let activation = try transaction(durable: true) { () throws(StoreError) -> Activation in
            if let expected, try activeKey()?.id != expected {
                throw StoreError(
                    .invalidTransition, path: path,
                    message: "the active key changed while this was decided; nothing was changed, ask again")
            }
            let candidate = try insertCandidate(key, source: source, at: at)
            let activation = try promote(candidate: candidate.id, state: state, at: at, retireReason: retireReason)
            if var verification {
                verification.keyID = candidate.id
                try insertCheck(verification)
            }
            return activation
        }
        publishActive()
        return activation
    }

    /// Marks a candidate as rejected and erases its secret at once: a refused key is
    /// never served and need not be kept.
    public func reject(candidate id: Int64, at: Date, reason: String) throws(StoreError) {
        try transaction(durable: false) { () throws(StoreError) in
            try connection.query(
                "UPDATE keys SET status = 'rejected', retired_at = ?, retire_reason = ?, secret = NULL, sealed_secret = NULL, secret_erased_at = ? WHERE id = ? AND status = 'candidate'",
                [SQLiteValue(at), .text(reason), SQLiteValue(at), .integer(id)])
            guard connection.changes == 1 else {
                throw StoreError(.invalidTransition, path: path, message: "key \(id) is not a candidate")
            }
        }
        // Its secret was written to the WAL when it was added.
        try truncateWAL()
    }

    /// Records a check and, with `affectsState`, applies its effect on the key's state
    /// (README, "Checking the key"): `valid` sets `last_verified_at` (and brings an `unverified` key
    /// to `valid`); `invalid` — confirmed by the caller — sets `invalid_since`, and
    /// stays; every other outcome leaves the state alone. A 401 still waiting for its
    /// confirmation is recorded with `affectsState: false`.
    @discardableResult
    public func record(check: CheckRecord, affectsState: Bool = true) throws(StoreError) -> KeyRecord {
        defer { if affectsState { publishActive() } }
        return try transaction(durable: check.outcome == .invalid && affectsState) { () throws(StoreError) -> KeyRecord in
            try insertCheck(check)
            switch affectsState ? check.outcome : nil {
            case .valid?:
                // A key confirmed invalid does not come back by a check (a regenerated
                // key is dead for good); a 2xx for it afterwards is recorded but does not
                // revive it. Only a re-verification does, as a new row (KeyRecovery).
                try connection.query(
                    "UPDATE keys SET state = 'valid', last_verified_at = ? WHERE id = ? AND state != 'invalid'",
                    [SQLiteValue(check.at), .integer(check.keyID)])
            case .invalid?:
                try connection.query(
                    "UPDATE keys SET state = 'invalid', invalid_since = COALESCE(invalid_since, ?) WHERE id = ?",
                    [SQLiteValue(check.at), .integer(check.keyID)])
            case .rejectedRequest?, .rateLimited?, .unreachable?, nil:
                break
            }
            guard let updated = try key(id: check.keyID, includeSecret: false) else {
                throw StoreError(.notFound, path: path, message: "no key with id \(check.keyID)")
            }
            return updated
        }
    }

    private func insertCheck(_ check: CheckRecord) throws(StoreError) {
        try connection.query(
            "INSERT INTO checks (key_id, at, outcome, http_status, latency_ms, reason) VALUES (?, ?, ?, ?, ?, ?)",
            [
                .integer(check.keyID), SQLiteValue(check.at), .text(check.outcome.rawValue),
                check.httpStatus.map { .integer(Int64($0)) } ?? .null,
                check.latencyMilliseconds.map { .integer(Int64($0)) } ?? .null,
                SQLiteValue(check.reason),
            ])
    }

    /// Erases one key's secret now. The active key's secret is never erased.
    public func eraseSecret(id: Int64, at: Date) throws(StoreError) {
        try transaction(durable: true) { () throws(StoreError) in
            try connection.query(
                "UPDATE keys SET secret = NULL, sealed_secret = NULL, secret_erased_at = ? WHERE id = ? AND status != 'active' AND (secret IS NOT NULL OR sealed_secret IS NOT NULL)",
                [SQLiteValue(at), .integer(id)])
        }
        try truncateWAL()
    }

    /// Deletes old checks and erases the secrets of dead keys: retired keys the API
    /// confirmed invalid, and every retired key older than the policy allows.
    @discardableResult
    public func applyRetention(now: Date, policy: RetentionPolicy = .standard) throws(StoreError) -> RetentionReport {
        let report = try transaction(durable: true) { () throws(StoreError) -> RetentionReport in
            try connection.query("DELETE FROM checks WHERE at < ?", [.real(now.timeIntervalSince1970 - policy.checkMaxAge)])
            var deleted = connection.changes
            try connection.query(
                "DELETE FROM checks WHERE id NOT IN (SELECT id FROM checks ORDER BY at DESC, id DESC LIMIT ?)",
                [.integer(Int64(policy.checkMaxCount))])
            deleted += connection.changes
            try connection.query(
                """
                UPDATE keys SET secret = NULL, sealed_secret = NULL, secret_erased_at = ?
                WHERE (secret IS NOT NULL OR sealed_secret IS NOT NULL) AND status IN ('retired', 'rejected')
                  AND (state = 'invalid' OR status = 'rejected' OR retired_at <= ?)
                """,
                [SQLiteValue(now), .real(now.timeIntervalSince1970 - policy.retiredSecretMaxAge)])
            return RetentionReport(checksDeleted: deleted, secretsErased: connection.changes)
        }
        var result = report
        if report.secretsErased > 0 || walOwesTruncate { result.walPending = !(try truncateWAL()) }
        return result
    }

    /// With `secure_delete` the main file no longer holds an erased secret, but the
    /// WAL still has the old page until it is checkpointed and truncated.
    /// Returns whether the WAL was truncated. A reader of the database (the `sqlite3`
    /// tool, a backup) keeps it from happening: SQLite answers `busy` rather than an
    /// error. Then every later retention pass tries again (``walOwesTruncate``).
    /// It does not wait for the reader (the store would stall, and the checks with it):
    /// the busy timeout is off for the checkpoint.
    @discardableResult
    private func truncateWAL() throws(StoreError) -> Bool {
        walOwesTruncate = try Self.checkpoint(connection)
        return !walOwesTruncate
    }

    /// Set while an erased (or newly sealed) secret may still be in the WAL: its
    /// truncation was refused.
    private var walOwesTruncate: Bool

    private func stripped(_ record: KeyRecord) -> KeyRecord {
        var copy = record
        copy.key = nil
        return copy
    }
}
