import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a key could not be put into the spool.
public struct SpoolWriteError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Puts a key into the spool the safe way (README, "Dropping in a new key"): under a hidden name the
/// daemon ignores, mode 0640, written and fsynced, then renamed to a visible name —
/// the daemon only ever sees the complete file — and the directory fsynced.
public enum SpoolWriter {
    /// Returns the visible name the file was renamed to.
    public static func write(_ key: APIKey, into directory: String, now: Date = Date()) throws(SpoolWriteError) -> String {
        let token = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let hidden = ".keyctl-\(token).tmp"
        let visible = "keyctl-\(SpoolDirectory.stamp(now))-\(token.prefix(8)).key"
        let hiddenPath = directory + "/" + hidden
        let fd = open(hiddenPath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            throw SpoolWriteError(message: "cannot create a file in \(directory): \(String(cString: strerror(errno)))\(errno == EACCES ? " (writing into the spool needs membership of its group, recotap-key-admin)" : "")")
        }
        // The umask may have taken bits away; the daemon's group must be able to read.
        fchmod(fd, 0o640)
        let bytes = Array((key.revealSecret() + "\n").utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let writeErrno = errno
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced else {
            unlink(hiddenPath)
            throw SpoolWriteError(message: "cannot write \(hiddenPath): \(String(cString: strerror(writeErrno)))")
        }
        guard rename(hiddenPath, directory + "/" + visible) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(hiddenPath)
            throw SpoolWriteError(message: "cannot rename \(hidden) to \(visible) in \(directory): \(reason)")
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
        return visible
    }
}
