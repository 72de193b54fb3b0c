import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Replaces a file so that a reader sees the old contents or the new, never a part:
/// the bytes go to a new file beside it (created exclusively, never through a
/// symlink), get their mode explicitly (whatever the umask), optionally reach the disk,
/// and the new file is renamed over the old. On failure the temporary file is removed
/// and the old file is untouched. Used for the generation file, the metrics textfile
/// and `recotap-keyctl exec --file`.
public enum AtomicFile {
    public struct WriteError: Error, CustomStringConvertible {
        public let description: String
    }

    /// `temporary`: the new file's name (default `PATH.tmp`, which no `*.prom` or
    /// `*.key` glob matches).
    public static func replace(
        _ path: String, with bytes: [UInt8], mode: mode_t, sync: Bool, temporary: String? = nil
    ) throws(WriteError) {
        let temporary = temporary ?? path + ".tmp"
        unlink(temporary)
        let fd = open(temporary, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw WriteError(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var written = 0
        var error: Int32 = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                error = count == 0 ? EIO : errno
                break
            }
            written += count
        }
        var failed = written != bytes.count
        if !failed, fchmod(fd, mode) != 0 || (sync && fsync(fd) != 0) {
            failed = true
            error = errno
        }
        if close(fd) != 0, !failed {
            failed = true
            error = errno
        }
        if !failed, rename(temporary, path) != 0 {
            failed = true
            error = errno
        }
        guard !failed else {
            unlink(temporary)
            throw WriteError(description: "cannot write \(path): \(String(cString: strerror(error)))")
        }
    }
}
