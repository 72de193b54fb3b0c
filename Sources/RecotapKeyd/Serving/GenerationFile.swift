import Foundation
import Logging
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The generation file (README "Consumers"): which key the sockets serve — version,
/// fingerprint, state, when it changed — never the key itself. Replaced atomically
/// (a new file renamed over the old one) after every committed change of the active
/// key or its state: the hook for systemd path units (`recotap-keyd-restart@.path`) and
/// scripts. Its format is stable: `NAME=value` lines a shell can source, `#` comments.
///
///     # recotap-keyd: the key its sockets serve (never the key itself)
///     VERSION=5
///     FINGERPRINT=3fa2c1d09e7b
///     STATE=valid
///     CHANGED_AT=2026-11-29T16:00:00Z
public struct GenerationFile: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// What the file says.
    public struct Contents: Sendable, Equatable {
        /// 0: no key.
        public var version: Int64
        /// Empty with no key.
        public var fingerprint: String
        /// `valid`, `unverified`, `invalid`, `none` (no key), `unavailable` (held sealed
        /// without its store key).
        public var state: String
        public var changedAt: Date

        public init(version: Int64, fingerprint: String, state: String, changedAt: Date) {
            self.version = version
            self.fingerprint = fingerprint
            self.state = state
            self.changedAt = changedAt
        }

        public init(_ record: KeyRecord?, at now: Date) {
            version = record?.id ?? 0
            fingerprint = record?.fingerprint ?? ""
            state = ServedState(record).rawValue
            changedAt = now
        }

        public var text: String {
            """
            # recotap-keyd: the key its sockets serve (never the key itself)
            VERSION=\(version)
            FINGERPRINT=\(fingerprint)
            STATE=\(state)
            CHANGED_AT=\(changedAt.formatted(.iso8601))

            """
        }

        /// Reads what ``text`` wrote; `nil` when a field is missing or malformed.
        public init?(text: String) {
            var fields: [String: String] = [:]
            for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
                let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { continue }
                fields[String(parts[0])] = String(parts[1])
            }
            guard let version = fields["VERSION"].flatMap({ Int64($0) }), version >= 0,
                let fingerprint = fields["FINGERPRINT"], let state = fields["STATE"], !state.isEmpty,
                let changed = fields["CHANGED_AT"], let changedAt = try? Date(changed, strategy: .iso8601)
            else { return nil }
            self.init(version: version, fingerprint: fingerprint, state: state, changedAt: changedAt)
        }
    }

    public struct WriteError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Writes `contents` to a new file beside the old one (mode 0644: the fingerprint is
    /// not secret, and consumers' path units and scripts read it) and renames it into
    /// place: a reader sees the old file or the new one, never a part.
    public func write(_ contents: Contents) throws(WriteError) {
        // The daemon's umask (0077 under the unit) would leave it unreadable to consumers.
        // No fsync: a runtime file (tmpfs), written anew at every start; the rename alone
        // makes a reader see the old file or the new one.
        do {
            try AtomicFile.replace(path, with: Array(contents.text.utf8), mode: 0o644, sync: false)
        } catch {
            throw WriteError(description: error.description)
        }
    }

    /// Reads the file; `nil` when it is missing or not in the format.
    /// Its reader (`restart-consumer`) runs as root on a file the daemon's user writes:
    /// never through a symlink, and at most 4 KiB (the real file is under 200 bytes).
    public func read() -> Contents? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return Contents(text: String(decoding: bytes.prefix(count), as: UTF8.self))
    }
}

/// Keeps the generation file in step with the store: written at start, then after every
/// commit that changes the active key's version, fingerprint or state. A failed write
/// is logged (once per distinct reason) and never stops the daemon: serving the key
/// matters more than announcing it.
struct GenerationService: Service, CustomStringConvertible {
    let file: GenerationFile
    let published: CurrentKey.Subscription
    let clock: any SchedulerClock
    let logger: Logger
    var description: String { "GenerationService" }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var written: GenerationFile.Contents?
            var lastError: String?
            for await record in published {
                let contents = GenerationFile.Contents(record, at: clock.now)
                if let written, written.version == contents.version, written.fingerprint == contents.fingerprint,
                    written.state == contents.state
                {
                    continue
                }
                do throws(GenerationFile.WriteError) {
                    try file.write(contents)
                    written = contents
                    lastError = nil
                    logger.debug(
                        "generation file \(file.path): version \(contents.version), \(contents.state)",
                        metadata: [LogKey.keyVersion: .stringConvertible(contents.version)])
                } catch {
                    if lastError != error.description {
                        logger.warning("cannot update the generation file: \(error.description)")
                    }
                    lastError = error.description
                }
            }
        }
    }
}
