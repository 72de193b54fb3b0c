import Foundation
import Logging

/// What became of one spool file.
public enum SpoolVerdict: Sendable, Equatable {
    case activated(fingerprint: String, state: KeyState)
    /// The file held the key already active: removed, nothing else.
    case alreadyActive
    /// Refused; `movedTo` is its name in `rejected/`, nil when it could not be moved.
    case rejected(reason: String, movedTo: String?)
    /// Logged and left in place (the daemon cannot read or move it, or the store
    /// failed); not looked at again until it changes.
    case left(reason: String)
    /// Gone before it could be read.
    case vanished
    /// Still open for writing by someone: left for its close event.
    case stillBeingWritten
}

/// A verdict as remembered for `GET /v1/spool` (and so for `recotap-keyctl rotate`).
public struct SpoolVerdictRecord: Sendable, Equatable {
    public var file: String
    public var at: Date
    /// `activated`, `already_active`, `rejected`, `left`.
    public var verdict: String
    public var reason: String?
    public var fingerprint: String?
}

/// Judges the files in the spool directory, one at a time, oldest first: reads each
/// safely, verifies the key with the API (when `spool.verify_before_activate`), and
/// either activates it — one durable SQLite transaction, and only then the file is
/// removed — or moves the file to `rejected/` with the reason in the journal. The
/// working key stays active through every refusal.
public actor SpoolIntake {
    private let directory: SpoolDirectory
    private let store: KeyStore
    private let client: any KeyCheckingClient
    private let verifyBeforeActivate: Bool
    private let clock: any SchedulerClock
    private let logger: Logger
    /// Asks the API again about a key declared invalid before (`nil`: such a key is refused).
    private let recovery: KeyRecovery?
    private let metrics: KeydMetrics?
    /// Files logged and left, as they were then: not judged again until they change.
    private var left: [String: SpoolDirectory.Entry] = [:]
    /// Files with names that are not UTF-8, refused but not movable: logged once.
    private var unmovable: Set<[UInt8]> = []
    /// The latest verdicts, newest last (at most ``recentKept``).
    private var recent: [SpoolVerdictRecord] = []
    public static let recentKept = 50
    public nonisolated var directoryPath: String { directory.path }

    /// What was decided lately, newest last.
    public func recentVerdicts() -> [SpoolVerdictRecord] { recent }

    /// Files waiting in the spool, and files kept in `rejected/`.
    public nonisolated func counts() -> (pending: Int, rejected: Int) {
        (directory.candidates().count, directory.rejectedCount())
    }

    public init(
        directory: SpoolDirectory, store: KeyStore, client: any KeyCheckingClient, verifyBeforeActivate: Bool,
        clock: any SchedulerClock, logger: Logger, recovery: KeyRecovery? = nil, metrics: KeydMetrics? = nil
    ) {
        self.recovery = recovery
        self.metrics = metrics
        self.directory = directory
        self.store = store
        self.client = client
        self.verifyBeforeActivate = verifyBeforeActivate
        self.clock = clock
        self.logger = logger
    }

    /// Judges every candidate file now in the directory (at start, and after the
    /// kernel's event queue overflowed), oldest modification first; the last good one
    /// stays active.
    ///
    /// `modifiedBefore`: at start, only files last modified before the inotify watch
    /// existed (plus a little slack) — anything written since then is judged on its
    /// own close event, so a file still being written when the daemon starts is not
    /// read half-way even where the daemon cannot take a read lease.
    @discardableResult
    public func processAll(modifiedBefore cutoff: Date? = nil) async -> [String: SpoolVerdict] {
        let candidates = listCandidates()
        guard let cutoff else { return await process(candidates, judging: candidates) }
        let limit = cutoff.timeIntervalSince1970
        return await process(
            candidates,
            judging: candidates.filter { Double($0.modified.tv_sec) + Double($0.modified.tv_nsec) / 1e9 <= limit })
    }

    /// Judges the named files (those inotify reported finished), oldest modification
    /// first. Only these: a file still being written by someone else is not touched
    /// until its own close or rename says it is complete.
    @discardableResult
    public func process(names: Set<String>) async -> [String: SpoolVerdict] {
        let candidates = listCandidates()
        return await process(candidates, judging: candidates.filter { names.contains($0.name) })
    }

    /// The candidates now in the directory; files whose names are not UTF-8 are
    /// refused on the way (whatever event brought the daemon here: their own events
    /// cannot name them).
    private func listCandidates() -> [SpoolDirectory.Entry] {
        let listing = directory.listing()
        unmovable.formIntersection(listing.undecodable)
        for raw in listing.undecodable where !unmovable.contains(raw) {
            let shown = SpoolDirectory.printable(raw)
            let reason = "the file name is not valid UTF-8 (name a key file with printable characters)"
            var metadata: Logger.Metadata = [LogKey.spoolFile: .string(shown), LogKey.reason: .string(reason)]
            switch directory.rejectUndecodable(raw, at: clock.now) {
            case .success(let target):
                metadata["spool.rejected_as"] = .string("rejected/" + target)
                logger.event(.spoolRejected, "refused \(shown): \(reason); moved to rejected/\(target); the current key stays", metadata: metadata)
                remember(shown, .rejected(reason: reason, movedTo: target))
            case .failure(let error):
                // Logged once: not again while it stays.
                unmovable.insert(raw)
                logger.event(.spoolRejected, "refused \(shown): \(reason); \(error.message), so it stays where it is", metadata: metadata)
            }
        }
        return listing.entries
    }

    /// `candidates`: everything in the directory now (to forget files no longer there);
    /// `entries`: those to judge, in order.
    private func process(
        _ candidates: [SpoolDirectory.Entry], judging entries: [SpoolDirectory.Entry]
    ) async -> [String: SpoolVerdict] {
        var verdicts: [String: SpoolVerdict] = [:]
        left = left.filter { name, _ in candidates.contains { $0.name == name } }
        for entry in entries {
            if let seen = left[entry.name], seen == entry { continue }
            left[entry.name] = nil
            let verdict = await judge(entry)
            verdicts[entry.name] = verdict
            remember(entry.name, verdict)
        }
        return verdicts
    }

    private func remember(_ file: String, _ verdict: SpoolVerdict) {
        let record: SpoolVerdictRecord
        let now = clock.now
        switch verdict {
        case .activated(let fingerprint, _):
            record = .init(file: file, at: now, verdict: "activated", reason: nil, fingerprint: fingerprint)
        case .alreadyActive:
            record = .init(file: file, at: now, verdict: "already_active", reason: nil, fingerprint: nil)
        case .rejected(let reason, _):
            record = .init(file: file, at: now, verdict: "rejected", reason: reason, fingerprint: nil)
        case .left(let reason):
            record = .init(file: file, at: now, verdict: "left", reason: reason, fingerprint: nil)
        case .vanished, .stillBeingWritten:
            return
        }
        metrics?.spoolVerdict(record.verdict)
        recent.append(record)
        if recent.count > Self.recentKept { recent.removeFirst(recent.count - Self.recentKept) }
    }

    private func judge(_ entry: SpoolDirectory.Entry) async -> SpoolVerdict {
        let name = entry.name
        let key: APIKey
        switch SpoolFileReader.read(path: directory.path + "/" + name) {
        case .vanished:
            return .vanished
        case .stillBeingWritten:
            return .stillBeingWritten
        case .unreadable(let reason):
            return leave(entry, reason: reason)
        case .refused(let reason, let fingerprint):
            return reject(entry, reason: reason, fingerprint: fingerprint)
        case .key(let found):
            key = found
        }
        switch await admit(key, source: name, from: name, metadata: [LogKey.spoolFile: .string(name)]) {
        case .activated(let fingerprint, let state):
            // The commit is durable (synchronous=FULL): only now may the file go.
            if !directory.remove(name) {
                logger.error(
                    "key from \(name) is active but the file cannot be removed: \(String(cString: strerror(errno)))",
                    metadata: [LogKey.spoolFile: .string(name)])
                left[name] = entry
            }
            return .activated(fingerprint: fingerprint, state: state)
        case .alreadyActive:
            // Already in force — also what a file looks like when the daemon died
            // between committing its key and removing it.
            _ = directory.remove(name)
            logger.info(
                "\(name) holds the key already active; removed",
                metadata: [LogKey.spoolFile: .string(name), LogKey.keyFingerprint: .string(key.fingerprint)])
            return .alreadyActive
        case .refused(let reason, let result, _):
            return reject(entry, reason: reason, fingerprint: key.fingerprint, result: result)
        case .deferred(let reason):
            return leave(entry, reason: reason)
        }
    }

    /// What became of a key offered to the store (``admit(_:source:from:metadata:)``).
    public enum Admission: Sendable, Equatable {
        case activated(fingerprint: String, state: KeyState)
        /// It is the active key already.
        case alreadyActive
        /// Not a working key, or it could not be verified; the current key stays.
        /// `dead`: the API answered 401 for it, or it was confirmed invalid before.
        case refused(reason: String, result: CheckResult?, dead: Bool)
        /// Not decided now (the store failed, or cannot take new secrets).
        case deferred(reason: String)
    }

    /// The path every new key takes, from a spool file or the key source: verified
    /// with the API (when `spool.verify_before_activate`), then activated in one
    /// durable transaction with KEY_ACTIVATED in the journal. `source` is what the
    /// store records as its origin; `origin` names it in messages ("key … from
    /// `origin` is now active"); `metadata` goes with every entry logged here.
    /// `onlyIfVerified`: the key replaces a working one only if the API accepts it now
    /// (whatever `spool.verify_before_activate` says); it is not activated unverified.
    public func admit(
        _ key: APIKey, source: String, from origin: String, metadata extra: Logger.Metadata,
        onlyIfVerified: Bool = false
    ) async -> Admission {
        if let refusal = store.refusesNewSecrets {
            // Not asked about: it goes in once the daemon runs with its store key.
            return .deferred(reason: refusal)
        }

        let active: KeyRecord?
        let known: KeyRecord?
        do {
            active = try await store.activeKey()
            known = try await store.key(fingerprint: key.fingerprint)
        } catch {
            return .deferred(reason: "the store failed: \(error)")
        }
        if let known, known.state == .invalid, let recovery {
            // A key declared invalid, offered again: maybe the 401 was Recotap's mistake.
            return await reverified(key, dead: known, active: active, source: source, recovery: recovery, metadata: extra)
        }
        if active?.fingerprint == key.fingerprint {
            return .alreadyActive
        }
        if let known, known.state == .invalid {
            let since = known.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
            return .refused(
                reason: "this key was already confirmed invalid\(since) (it has been regenerated); generate a new one",
                result: nil, dead: true)
        }

        var state = KeyState.unverified
        var verification: CheckResult?
        if verifyBeforeActivate || onlyIfVerified {
            let result = await client.check(key)
            verification = result
            switch result.outcome {
            case .valid:
                state = .valid
            case .invalid:
                return .refused(
                    reason: "refused by the API (HTTP 401: \(result.reason ?? "Unauthorized")): not a working key",
                    result: result, dead: true)
            case .rejectedRequest:
                return .refused(
                    reason: "the API refused the verification request (\(result.reason ?? "HTTP \(result.httpStatus ?? 0)")); the current key stays",
                    result: result, dead: false)
            case .unreachable where onlyIfVerified, .rateLimited where onlyIfVerified:
                return .refused(
                    reason: "cannot verify it now (\(result.reason ?? result.outcome.rawValue)), and the working key is not replaced by one the API has not accepted",
                    result: result, dead: false)
            case .unreachable, .rateLimited:
                // The usual reason for a new key is that the old one was just
                // regenerated: the old one is probably dead, so the new one goes in
                // now and is verified at the next chance.
                logger.notice(
                    "cannot verify the key from \(origin) now (\(result.reason ?? result.outcome.rawValue)); activating it unverified",
                    metadata: extra.merging([LogKey.keyFingerprint: .string(key.fingerprint)]) { _, new in new })
            }
        }

        let activation: Activation
        do {
            let now = clock.now
            // The verification was a check like any other: status shows it as the last
            // one. Recorded with the activation, so the key is published with it.
            let check = verification.map { verification in
                CheckRecord(
                    keyID: 0, at: now, outcome: verification.outcome,
                    httpStatus: verification.httpStatus, latencyMilliseconds: Int(verification.latency.milliseconds),
                    reason: [verification.reason, "(verification before activation)"].compactMap { $0 }.joined(separator: " "))
            }
            activation = try await store.addAndActivate(
                key, source: source, state: state, at: now, retireReason: "replaced by \(origin)", verification: check)
        } catch {
            return .deferred(reason: "the store failed: \(error)")
        }
        var metadata: Logger.Metadata = [
            LogKey.keyFingerprint: .string(key.fingerprint),
            LogKey.keyVersion: .stringConvertible(activation.activated.id),
            LogKey.keySource: .string(activation.activated.sourceKind),
            "key.state": .string(state.rawValue),
        ]
        metadata.merge(extra) { _, new in new }
        if let previous = activation.retired { metadata["key.previous_fingerprint"] = .string(previous.fingerprint) }
        if let verification { metadata.merge(CheckMachine.metadata(for: verification)) { _, new in new } }
        let replacing = activation.retired.map { ", replacing \($0.fingerprint)" } ?? ""
        logger.event(
            .keyActivated,
            "key \(key.fingerprint) from \(origin) is now active (\(state == .valid ? "verified" : "not yet verified")\(replacing); source=\(activation.activated.sourceKind))",
            metadata: metadata)
        return .activated(fingerprint: key.fingerprint, state: state)
    }

    /// A key declared invalid before, offered again: asked again (within the recovery's
    /// call budget); active again under a new version if the API accepts it now,
    /// refused with what it answered otherwise.
    private func reverified(
        _ key: APIKey, dead: KeyRecord, active: KeyRecord?, source: String, recovery: KeyRecovery,
        metadata: Logger.Metadata
    ) async -> Admission {
        let since = dead.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
        switch await recovery.reverify(key, dead: dead, active: active, source: source, metadata: metadata) {
        case .reinstated:
            return .activated(fingerprint: key.fingerprint, state: .valid)
        case .refused(let reason, let result):
            return .refused(
                reason: "this key was declared invalid\(since) and was asked about again: \(reason)", result: result,
                dead: true)
        case .tooSoon(let wait):
            let seconds = max(1, Saturating.int64(wait.seconds.rounded(.up)) ?? 1)
            return .refused(
                reason: "this key was declared invalid\(since); it is asked about again at most once per check.report_min_interval, next in \(seconds) s — drop it again then",
                result: nil, dead: true)
        case .unavailable("changed", _):
            // Another key became active while the API was being asked: that one was
            // dropped later, or by someone else; it stays. Nothing is lost: the file
            // is in rejected/.
            return .refused(
                reason: "another key became active while this one was being asked about; drop it again if it should replace that one",
                result: nil, dead: false)
        case .unavailable(_, let reason):
            return .deferred(reason: reason)
        }
    }

    private func reject(
        _ entry: SpoolDirectory.Entry, reason: String, fingerprint: String?, result: CheckResult? = nil
    ) -> SpoolVerdict {
        var metadata: Logger.Metadata = [LogKey.spoolFile: .string(entry.name), LogKey.reason: .string(reason)]
        if let fingerprint { metadata[LogKey.keyFingerprint] = .string(fingerprint) }
        if let status = result?.httpStatus { metadata[LogKey.httpStatus] = .stringConvertible(status) }
        switch directory.reject(entry.name, at: clock.now) {
        case .success(let target):
            metadata["spool.rejected_as"] = .string("rejected/" + target)
            logger.event(
                .spoolRejected, "refused \(entry.name): \(reason); moved to rejected/\(target); the current key stays",
                metadata: metadata)
            return .rejected(reason: reason, movedTo: target)
        case .failure(let error):
            left[entry.name] = entry
            logger.event(
                .spoolRejected, "refused \(entry.name): \(reason); \(error.message), so it stays where it is; the current key stays",
                metadata: metadata)
            return .rejected(reason: reason, movedTo: nil)
        }
    }

    private func leave(_ entry: SpoolDirectory.Entry, reason: String) -> SpoolVerdict {
        left[entry.name] = entry
        logger.error(
            "cannot process \(entry.name): \(reason); left in place, and looked at again only when it changes",
            metadata: [LogKey.spoolFile: .string(entry.name), LogKey.reason: .string(reason)])
        return .left(reason: reason)
    }
}
