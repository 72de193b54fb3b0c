import Foundation

/// What reading one spool file gave.
public enum SpoolRead: Sendable, Equatable {
    /// A well-formed key.
    case key(APIKey)
    /// Refused, with the reason in plain words and, when the content was a well-formed
    /// key, its fingerprint. The file goes to `rejected/`.
    case refused(reason: String, fingerprint: String?)
    /// Gone before it could be read (renamed or removed meanwhile): nothing to do.
    case vanished
    /// Another process still has it open for writing: not read now; its close will
    /// bring it back.
    case stillBeingWritten
    /// Could not be read for a reason that is not the file's fault (I/O error, out of
    /// descriptors): logged and left.
    case unreadable(String)
}

/// Reads a spool file the safe way: `open` with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`,
/// `fstat` the descriptor, read from that descriptor only — so a symlink, a FIFO or a
/// file swapped in between the check and the read cannot fool it.
public enum SpoolFileReader {
    public static let maximumSize = 4096
    /// `F_SETLEASE` (`F_LINUX_SPECIFIC_BASE + 0`) is behind `_GNU_SOURCE`, which
    /// Swift's Glibc module does not define.
    static let setLease: Int32 = 1024

    public static func read(path: String) -> SpoolRead {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            switch code {
            case ELOOP: return .refused(reason: "symbolic link (only regular files are read)", fingerprint: nil)
            case ENOENT: return .vanished
            case EACCES, EPERM:
                return .refused(
                    reason: "permission denied: the daemon (uid \(geteuid())) cannot read it; write it with mode 0640 and group recotap-key-admin (install -m 0640 -g recotap-key-admin FILE SPOOL/new.key)",
                    fingerprint: nil)
            default:
                return .unreadable("cannot open: \(String(cString: strerror(code)))")
            }
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .unreadable("cannot fstat: \(String(cString: strerror(errno)))") }
        let type = info.st_mode & S_IFMT
        guard type == S_IFREG else {
            return .refused(reason: "not a regular file (\(describe(type: type)))", fingerprint: nil)
        }
        guard info.st_nlink == 1 else {
            return .refused(reason: "hard link (\(info.st_nlink) names for one file; write a new file instead)", fingerprint: nil)
        }
        guard info.st_mode & 0o002 == 0 else {
            return .refused(
                reason: "world-writable (mode \(String(info.st_mode & 0o7777, radix: 8))): anyone could have written it; use mode 0640",
                fingerprint: nil)
        }
        guard info.st_size <= maximumSize else {
            return .refused(reason: "too large (\(info.st_size) bytes; a key file holds at most 4 KiB)", fingerprint: nil)
        }
        // A read lease is refused (EAGAIN) while any process has the file open for
        // writing: the kernel's own answer to "is it complete?". It needs the file's
        // owner or CAP_LEASE; when the daemon may not take one, the inotify events
        // (judge on close or rename) are what keeps half-written files out.
        if fcntl(fd, setLease, Int32(F_RDLCK)) == 0 {
            _ = fcntl(fd, setLease, Int32(F_UNLCK))
        } else if errno == EAGAIN {
            return .stillBeingWritten
        }
        var bytes = [UInt8](repeating: 0, count: maximumSize + 1)
        var count = 0
        while count < bytes.count {
            let got = bytes.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress! + count, $0.count - count) }
            if got == 0 { break }
            if got < 0 {
                if errno == EINTR { continue }
                return .unreadable("cannot read: \(String(cString: strerror(errno)))")
            }
            count += got
        }
        guard count <= maximumSize else {
            return .refused(reason: "too large (more than 4 KiB; a key file holds at most 4 KiB)", fingerprint: nil)
        }
        switch KeyFileContent.parse(Array(bytes[0..<count])) {
        case .key(let secret): return .key(APIKey(secret: secret))
        case .empty: return .refused(reason: "empty", fingerprint: nil)
        case .malformed(let why): return .refused(reason: "malformed: \(why)", fingerprint: nil)
        }
    }

    static func describe(type: mode_t) -> String {
        switch type {
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        case S_IFDIR: "a directory"
        case S_IFLNK: "a symbolic link"
        default: "type \(String(type, radix: 8))"
        }
    }
}
