import CSystemd

/// Process-wide protections for a daemon whose memory holds an API key.
public enum ProcessHardening {
    /// No core dumps, and no `ptrace` or `/proc/PID/mem` access by other processes of
    /// the same user (as ssh-agent does). Returns whether the kernel accepted it.
    @discardableResult
    public static func disableCoreDumps() -> Bool {
        recotap_set_dumpable(0) == 0
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension ProcessHardening {
    /// Raises the soft limit on open files to the hard limit (capped at 65,536), as
    /// systemd recommends for daemons that do not use `select()`: the socket
    /// connection cap, not the default soft limit of 1,024, should decide how many
    /// clients are served at once. Returns the soft limit in force.
    @discardableResult
    public static func raiseFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        let wanted = min(limit.rlim_max, 65_536)
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return UInt64(limit.rlim_cur)
    }
}
