/// The daemon's version, reported in the journal, `--version` and (later) the
/// `User-Agent` and `/v1/status`.
public enum KeydVersion {
    public static let current = "0.1.0"
}
