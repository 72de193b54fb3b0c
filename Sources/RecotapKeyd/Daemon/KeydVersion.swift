import CBuildInfo

/// The daemon's version, reported in the journal, `--version`, `/v1/status` and
/// `recotap_keyd_build_info`.
public enum KeydVersion {
    public static let current = RECOTAP_VERSION

    /// The git revision of the build (`git describe --always --dirty`, written by `make`);
    /// "unknown" for a build that did not say.
    public static let revision = String(cString: recotap_git_revision())

    /// What every binary's `--version` prints: `0.1.0 (git 1a2b3c4)`.
    public static let full = "\(current) (git \(revision))"
}
