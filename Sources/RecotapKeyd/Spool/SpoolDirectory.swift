import Crypto
import Foundation

/// Why the spool directory cannot be used (a start-up error).
public struct SpoolSetupError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// The spool directory on disk: its checks at start, the listing of candidate files,
/// and `rejected/`.
public struct SpoolDirectory: Sendable {
    public let path: String
    public var rejectedPath: String { path + "/rejected" }
    /// How many refused files `rejected/` keeps (the newest).
    public static let rejectedKept = 20

    /// Said at start about the directory, for the log (e.g. `rejected/` unusable).
    public private(set) var warnings: [String] = []

    /// Creates the directory if missing (mode 3770: setgid, so files arrive in its
    /// group, and sticky, so writers cannot rename or delete each other's files or
    /// the daemon's); refuses a directory that is a symlink or world-writable. A
    /// directory the daemon owns gets its sticky bit if it lacks it.
    ///
    /// `rejected/` is created if missing, but never trusted by name: it is opened by
    /// descriptor on every use (``withRejected(_:)``), so one replaced by a file or a
    /// symlink — at run time or before a start — stops nothing and is never
    /// followed; refused files then stay where they are, logged.
    public init(path: String) throws(SpoolSetupError) {
        self.path = path
        var info = stat()
        if lstat(path, &info) != 0 {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw SpoolSetupError(message: "spool.directory \(path): cannot create it: \(error.localizedDescription)")
            }
            chmod(path, 0o3770)  // explicit: the umask would drop the group bits
            guard lstat(path, &info) == 0 else {
                throw SpoolSetupError(message: "spool.directory \(path): cannot stat it after creating it")
            }
        }
        let type = info.st_mode & S_IFMT
        guard type != S_IFLNK else {
            throw SpoolSetupError(message: "spool.directory \(path) is a symbolic link; refusing to watch it (use the real path)")
        }
        guard type == S_IFDIR else {
            throw SpoolSetupError(message: "spool.directory \(path) exists and is not a directory")
        }
        guard info.st_mode & 0o002 == 0 else {
            throw SpoolSetupError(
                message: "spool.directory \(path) is world-writable (mode \(String(info.st_mode & 0o7777, radix: 8))): anyone could plant a key; make it 3770 with group recotap-key-admin")
        }
        if info.st_mode & S_ISVTX == 0 {
            if info.st_uid == geteuid(), chmod(path, (info.st_mode & 0o7777) | S_ISVTX) == 0 {
                warnings.append("spool.directory \(path) lacked the sticky bit (writers could rename each other's files and rejected/): set it")
            } else if info.st_mode & 0o020 != 0 {
                warnings.append("spool.directory \(path) is group-writable without the sticky bit: writers can rename each other's files and rejected/; make it 3770")
            }
        }
        if case .failure(let problem) = withRejected({ _ in () }) {
            warnings.append("\(problem.message); refused files stay in the spool until it is fixed")
        }
    }

    /// Whether a name is one the daemon waits for: a name starting with `.` or ending
    /// in `.tmp` or `~` is a file still being written, ignored until renamed.
    public static func isCandidate(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix(".") && !name.hasSuffix(".tmp") && !name.hasSuffix("~") && name != "rejected"
    }

    public struct Entry: Sendable, Equatable {
        public var name: String
        public var modified: timespec
        public var inode: UInt64
        public var size: Int64

        public static func == (a: Entry, b: Entry) -> Bool {
            a.name == b.name && a.inode == b.inode && a.size == b.size
                && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
        }
    }

    /// The candidate files, oldest modification first (then by name).
    public func candidates() -> [Entry] { listing().entries }

    /// The candidate files, and the names of files that would be candidates but are
    /// not valid UTF-8 (a writer chooses a name's bytes; such a file can be neither
    /// named in the journal nor opened through a `String`, so it is refused as it is).
    public func listing() -> (entries: [Entry], undecodable: [[UInt8]]) {
        var names: [String] = []
        var undecodable: [[UInt8]] = []
        for raw in Self.rawNames(in: path) {
            if let name = String(validating: raw, as: UTF8.self) {
                names.append(name)
            } else if Self.isCandidate(String(decoding: raw, as: UTF8.self)) {
                undecodable.append(raw)
            }
        }
        var entries: [Entry] = []
        for name in names where Self.isCandidate(name) {
            var info = stat()
            guard lstat(path + "/" + name, &info) == 0 else { continue }
            entries.append(Entry(name: name, modified: info.st_mtim, inode: UInt64(info.st_ino), size: Int64(info.st_size)))
        }
        let sorted = entries.sorted {
            ($0.modified.tv_sec, $0.modified.tv_nsec, $0.name) < ($1.modified.tv_sec, $1.modified.tv_nsec, $1.name)
        }
        return (sorted, undecodable)
    }

    /// The names in a directory as the bytes they are (`.` and `..` left out).
    static func rawNames(in path: String) -> [[UInt8]] {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        return rawNames(of: fd)
    }

    /// The names in an open directory, as bytes (`.` and `..` left out); `directory`
    /// stays open.
    static func rawNames(of directory: CInt) -> [[UInt8]] {
        let copy = dup(directory)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            return []
        }
        defer { closedir(stream) }
        var names: [[UInt8]] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != [0x2E] && name != [0x2E, 0x2E] { names.append(name) }
        }
        return names
    }

    /// A name's bytes as printable ASCII: visible ASCII as it is, every other byte
    /// (and `%` itself) percent-encoded, `key-%FF%FE` — a name the journal, a terminal
    /// and `rejected/` can all hold, and that says which bytes were there.
    public static func printable(_ raw: [UInt8]) -> String {
        raw.map { byte in
            (0x21..<0x7F).contains(byte) && byte != UInt8(ascii: "%")
                ? String(UnicodeScalar(byte)) : "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
        }.joined()
    }

    /// Moves a refused file to `rejected/<UTC time>-<name>` (mode 0600) and keeps only
    /// the newest ``rejectedKept``. Returns the new name, or why it could not be moved.
    public func reject(_ name: String, at now: Date) -> Result<String, SpoolSetupError> {
        moveToRejected(named: name, at: now) { rejected, target in renameat(AT_FDCWD, path + "/" + name, rejected, target) }
    }

    /// Moves a file whose name is not UTF-8 to `rejected/<UTC time>-<printable name>`
    /// (mode 0600). Returns the new name, or why it could not be moved.
    public func rejectUndecodable(_ raw: [UInt8], at now: Date) -> Result<String, SpoolSetupError> {
        let source = Array(path.utf8) + [0x2F] + raw + [0]
        return moveToRejected(named: Self.printable(raw), at: now) { rejected, target in
            source.withUnsafeBufferPointer {
                $0.withMemoryRebound(to: CChar.self) { renameat(AT_FDCWD, $0.baseAddress!, rejected, target) }
            }
        }
    }

    /// `move(rejected, target)` renames the file into the open `rejected/` under
    /// `target`; then the file is made 0600, the move durable, and `rejected/` pruned.
    private func moveToRejected(
        named name: String, at now: Date, move: (CInt, String) -> Int32
    ) -> Result<String, SpoolSetupError> {
        withRejected { rejected -> Result<String, SpoolSetupError> in
            let stamp = Self.stamp(now)
            let name = Self.fitting(name)
            var target = "\(stamp)-\(name)"
            var attempt = 1
            var info = stat()
            while fstatat(rejected, target, &info, AT_SYMLINK_NOFOLLOW) == 0 {
                attempt += 1
                target = "\(stamp)-\(attempt)-\(name)"
            }
            guard move(rejected, target) == 0 else {
                return .failure(SpoolSetupError(message: "cannot move it to rejected/: \(String(cString: strerror(errno)))"))
            }
            // Not through a symlink (chmod would follow it); a FIFO or directory, yes.
            if fstatat(rejected, target, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT != S_IFLNK {
                fchmodat(rejected, target, 0o600, 0)
            }
            fsync(rejected)
            fsyncDirectory()
            Self.prune(rejected)
            return .success(target)
        }.flatMap { $0 }
    }

    /// `name`, shortened if a stamp and it would not fit in a file name (255 bytes): its
    /// first 150 bytes, `…` and 16 hex digits of its SHA-256, so names stay apart.
    static func fitting(_ name: String) -> String {
        guard name.utf8.count > 200 else { return name }
        var prefix = ""
        for character in name {
            if prefix.utf8.count + String(character).utf8.count > 150 { break }
            prefix.append(character)
        }
        let digest = SHA256.hash(data: Array(name.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
        return prefix + "…" + digest
    }

    /// Runs `body` with `rejected/` open as a directory the daemon owns and no one
    /// else may enter (created 0700 if missing) — never through a symlink, never a
    /// file put in its place.
    func withRejected<T>(_ body: (CInt) -> T) -> Result<T, SpoolSetupError> {
        var fd = open(rejectedPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0, errno == ENOENT {
            mkdir(rejectedPath, 0o700)
            fd = open(rejectedPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd >= 0 { fchmod(fd, 0o700) }  // explicit, whatever the umask
        }
        guard fd >= 0 else {
            let reason = errno == ENOTDIR || errno == ELOOP
                ? "is not a directory (a file or a symbolic link is in its place)" : String(cString: strerror(errno))
            return .failure(SpoolSetupError(message: "\(rejectedPath) \(reason)"))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_uid == geteuid(), info.st_mode & 0o077 == 0 else {
            return .failure(SpoolSetupError(
                message: "\(rejectedPath) is not the daemon's own private directory (owner \(info.st_uid), mode \(String(info.st_mode & 0o7777, radix: 8)); it must be 0700 and the daemon's)"))
        }
        return .success(body(fd))
    }

    /// How many files `rejected/` holds (0 when it is unusable).
    public func rejectedCount() -> Int {
        (try? withRejected { Self.entries(of: $0).count }.get()) ?? 0
    }

    /// Removes a file whose key is now safely in the store, then makes the removal
    /// durable.
    public func remove(_ name: String) -> Bool {
        guard unlink(path + "/" + name) == 0 || errno == ENOENT else { return false }
        fsyncDirectory()
        return true
    }

    /// Keeps the newest ``rejectedKept`` by the time they were moved there (the
    /// change time a rename sets; the name's stamp has only millisecond resolution).
    /// Everything is removed by name inside the open directory, one entry at a time:
    /// a directory someone left there is removed only if empty, never recursively.
    private static func prune(_ rejected: CInt) {
        let names = entries(of: rejected)
        guard names.count > rejectedKept else { return }
        let byAge = names.map { name -> (name: String, changed: timespec) in
            var info = stat()
            fstatat(rejected, name, &info, AT_SYMLINK_NOFOLLOW)
            return (name, info.st_ctim)
        }.sorted { ($0.changed.tv_sec, $0.changed.tv_nsec, $0.name) < ($1.changed.tv_sec, $1.changed.tv_nsec, $1.name) }
        for (name, _) in byAge.prefix(names.count - rejectedKept) {
            if unlinkat(rejected, name, 0) != 0, errno == EISDIR {
                unlinkat(rejected, name, AT_REMOVEDIR)
            }
        }
    }

    /// The names in an open directory.
    private static func entries(of directory: CInt) -> [String] {
        // Only the daemon's own names are in rejected/: all UTF-8.
        rawNames(of: directory).map { String(decoding: $0, as: UTF8.self) }
    }

    func fsyncDirectory() {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    static func stamp(_ date: Date) -> String {
        let milliseconds = Saturating.int64(date.timeIntervalSince1970 * 1000) ?? 0
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let millis = Int(milliseconds % 1000)
        return String(
            format: "%04d%02d%02dT%02d%02d%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec, millis)
    }
}
