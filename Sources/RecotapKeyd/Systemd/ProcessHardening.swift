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
