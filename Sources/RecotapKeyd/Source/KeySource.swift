import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Fetches a replacement key from the key source command (README "Fleets") and hands
/// it to the spool's path (``SpoolIntake/admit(_:source:from:metadata:)``): verified
/// with the API, activated durably, KEY_ACTIVATED with `source=command`.
///
/// One fetch runs at a time; asking while one runs waits for its outcome. A fetch that
/// returns a key the store knows is dead, or that the API refused before, costs no API
/// request: it is SOURCE_NO_NEW_KEY until the command returns another key. Every fetch
/// that ends without a new key logs exactly one event (SOURCE_FETCH_FAILED or
/// SOURCE_NO_NEW_KEY; an info line names the key it returned, if any);
/// ``KeySourceService`` spaces such fetches by the backoff.
public actor KeySource {
    /// What the store records as the origin of a key the command returned.
    public static let storeSource = "command"
    /// Keys the command returned that the API refused, remembered so they cost no
    /// request when returned again (newest last).
    static let refusedKept = 16
    /// How many of the store's latest keys are redacted from the command's stderr.
    static let redactedHistory = 5

    public enum Trigger: String, Sendable {
        /// The active key was confirmed invalid, or there is no key (at start, or since).
        case needed
        /// `POST /v1/fetch`, `recotap-keyctl fetch`.
        case admin
        /// `source.interval`.
        case interval
    }

    public enum Outcome: Sendable, Equatable {
        case activated(fingerprint: String, state: KeyState)
        /// It returned the active key, which works.
        case unchanged(fingerprint: String)
        /// SOURCE_NO_NEW_KEY: nothing, or a key known dead or refused by the API.
        case noNewKey(reason: String)
        /// SOURCE_FETCH_FAILED: it could not run, failed, timed out, or wrote no usable key.
        case failed(reason: String)

        /// `activated`, `unchanged`, `no_new_key`, `failed`: the metric label and the JSON answer's `result`.
        public var label: String {
            switch self {
            case .activated: "activated"
            case .unchanged: "unchanged"
            case .noNewKey: "no_new_key"
            case .failed: "failed"
            }
        }

        /// Whether the next fetch for a dead key should wait for the backoff.
        public var backsOff: Bool {
            switch self {
            case .noNewKey, .failed: true
            case .activated, .unchanged: false
            }
        }
    }

    public let command: KeySourceCommand
    private let store: KeyStore
    private let intake: SpoolIntake
    private let logger: Logger
    private let metrics: KeydMetrics?
    private var running: Task<Outcome, Never>?
    private var refused: [String] = []
    public private(set) var lastOutcome: (at: Date, trigger: Trigger, outcome: Outcome)?
    private let clock: any SchedulerClock

    public init(
        command: KeySourceCommand, store: KeyStore, intake: SpoolIntake, clock: any SchedulerClock, logger: Logger,
        metrics: KeydMetrics? = nil
    ) {
        self.command = command
        self.store = store
        self.intake = intake
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
    }

    /// Runs the command now, or waits for the fetch already running.
    public func fetch(_ trigger: Trigger) async -> Outcome {
        if let running { return await running.value }
        let task = Task { await self.perform(trigger) }
        running = task
        // Set under the lock `cancel()` takes: a fetch starting as the daemon shuts
        // down is cancelled too, however the two interleave.
        if runningForCancel.withLock({ control in
            control.task = task
            return control.shuttingDown
        }) {
            task.cancel()
        }
        let outcome = await task.value
        running = nil
        runningForCancel.withLock { $0.task = nil }
        lastOutcome = (clock.now, trigger, outcome)
        metrics?.sourceFetch(outcome.label)
        return outcome
    }

    /// The fetch running, and whether the daemon is shutting down, for ``cancel()``.
    private nonisolated let runningForCancel = Mutex<(task: Task<Outcome, Never>?, shuttingDown: Bool)>((nil, false))

    /// At shutdown: ends the fetch running, if any (the command's process group is
    /// killed), and every later one before it starts its command — whoever asked
    /// (the service, an admin) — so a slow command never holds the daemon up.
    public nonisolated func cancel() {
        runningForCancel.withLock { control -> Task<Outcome, Never>? in
            control.shuttingDown = true
            return control.task
        }?.cancel()
    }

    private func perform(_ trigger: Trigger) async -> Outcome {
        var metadata: Logger.Metadata = [
            LogKey.sourceCommand: .string(TerminalSafe.escape(command.arguments.first ?? "")),
            LogKey.sourceTrigger: .string(trigger.rawValue),
        ]
        if Task.isCancelled { return cancelled(metadata) }
        if let refusal = store.refusesNewSecrets {
            // Not worth running: whatever it returned could not be taken.
            return failed("not run: \(refusal)", metadata: metadata)
        }
        let run: KeySourceRun
        do {
            run = try await command.run()
        } catch {
            return Task.isCancelled ? cancelled(metadata) : failed(error.message, metadata: metadata)
        }
        if Task.isCancelled { return cancelled(metadata) }
        metadata[LogKey.durationMilliseconds] = .stringConvertible(Int(run.duration.milliseconds))
        switch run.termination {
        case .exited(let code), .signalled(let code):
            metadata[run.termination == .exited(code) ? LogKey.exitStatus : LogKey.signal] = .stringConvertible(code)
        case .timedOut, .outputTooLarge:
            break
        }
        let active = store.current.record
        // Redacted from its stderr: the key it returned, and the keys the store holds
        // lately (the active one, those it replaced).
        var secrets = (try? await store.history(limit: Self.redactedHistory))?.compactMap { $0.key?.revealSecret() } ?? []
        if let secret = active?.key?.revealSecret() { secrets.append(secret) }
        if case .key(let returned) = KeyFileContent.parse(run.output) { secrets.append(returned) }
        let stderr = run.errorSummary(redacting: secrets)
        if let stderr { metadata[LogKey.stderr] = .string(stderr) }
        let ran = "\(TerminalSafe.escape(run.program)) \(run.describeTermination(timeout: command.timeout)) in \(Int(run.duration.milliseconds)) ms"
        let said = stderr.map { "; it said: \($0)" } ?? ""
        guard run.succeeded else {
            return failed("\(ran)\(said)", metadata: metadata)
        }
        let key: APIKey
        switch KeyFileContent.parse(run.output) {
        case .empty:
            return noNewKey("\(ran) and wrote no key\(said)", metadata: metadata)
        case .malformed(let why):
            return failed("\(ran) but its output is not a key: \(why)", metadata: metadata)
        case .key(let secret):
            key = APIKey(secret: secret)
        }
        metadata[LogKey.keyFingerprint] = .string(key.fingerprint)
        logger.info("\(ran) and returned key \(key.fingerprint)", metadata: metadata)

        if let active, active.fingerprint == key.fingerprint, active.state != .invalid {
            return .unchanged(fingerprint: key.fingerprint)
        }
        let known: KeyRecord?
        do {
            known = try await store.key(fingerprint: key.fingerprint)
        } catch {
            return failed("the store failed: \(error)", metadata: metadata)
        }
        if let known, known.state == .invalid {
            let since = known.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
            return noNewKey(
                "the key source still returns key \(key.fingerprint), confirmed invalid\(since); it is not tried again until the source returns another key",
                metadata: metadata)
        }
        if refused.contains(key.fingerprint) {
            return noNewKey(
                "the key source still returns key \(key.fingerprint), which the API refused before; it is not tried again until the source returns another key",
                metadata: metadata)
        }
        // A working key is replaced only by one the API accepts now; a dead (or no) key
        // by anything the spool would take, verified at the next chance if need be.
        let working = active.map { $0.state != .invalid } ?? false
        switch await intake.admit(
            key, source: Self.storeSource, from: "the key source", metadata: metadata, onlyIfVerified: working)
        {
        case .activated(let fingerprint, let state):
            return .activated(fingerprint: fingerprint, state: state)
        case .alreadyActive:
            return .unchanged(fingerprint: key.fingerprint)
        case .refused(let reason, let result, let dead):
            if let status = result?.httpStatus { metadata[LogKey.httpStatus] = .stringConvertible(status) }
            guard dead else { return failed("key \(key.fingerprint) could not be verified: \(reason)", metadata: metadata) }
            refused.append(key.fingerprint)
            if refused.count > Self.refusedKept { refused.removeFirst(refused.count - Self.refusedKept) }
            return noNewKey("the key source returned key \(key.fingerprint), and it was refused: \(reason)", metadata: metadata)
        case .deferred(let reason):
            return failed("key \(key.fingerprint) was not taken: \(reason)", metadata: metadata)
        }
    }

    /// Cancelled at shutdown: the command was killed; not a failure of the source.
    private func cancelled(_ metadata: Logger.Metadata) -> Outcome {
        logger.info("key source command stopped: the daemon is shutting down", metadata: metadata)
        return .failed(reason: "stopped: the daemon is shutting down")
    }

    private func failed(_ reason: String, metadata: Logger.Metadata) -> Outcome {
        var metadata = metadata
        metadata[LogKey.reason] = .string(reason)
        logger.event(.sourceFetchFailed, "key source fetch failed: \(reason); the current key stays", metadata: metadata)
        return .failed(reason: reason)
    }

    private func noNewKey(_ reason: String, metadata: Logger.Metadata) -> Outcome {
        var metadata = metadata
        metadata[LogKey.reason] = .string(reason)
        logger.event(.sourceNoNewKey, "key source has no new key: \(reason)", metadata: metadata)
        return .noNewKey(reason: reason)
    }
}

/// Runs the key source when the daemon needs a key — the active key confirmed
/// invalid, or none at all (at start too) — retrying with the backoff of
/// `check.backoff_min` doubling to `check.backoff_max` (with `check.jitter`) while
/// the fetches bring no new key; and every `source.interval` when set.
struct KeySourceService: Service, CustomStringConvertible {
    let source: KeySource
    let published: CurrentKey.Subscription
    let interval: Duration?
    let backoffMin: Duration
    let backoffMax: Duration
    let jitter: Double
    let random: @Sendable () -> Double
    let clock: any SchedulerClock
    let readiness: Readiness

    var description: String { "KeySourceService" }

    /// The wait after the `failures`-th fetch in a row that brought no new key.
    static func backoff(failures: Int, min: Duration, max: Duration, jitter: Double, random: Double) -> Duration {
        let doublings = Swift.min(Swift.max(failures - 1, 0), 30)
        var wait = min.seconds * Double(1 << doublings)
        wait = Swift.min(wait, max.seconds)
        wait *= 1 + jitter * (2 * random - 1)
        return .milliseconds(Int64(Swift.max(wait, 0.001) * 1000))
    }

    func run() async throws {
        let source = self.source
        try await runUntilGracefulShutdown(after: readiness) {
            // Cancelled at the graceful shutdown: so is any fetch, whoever started it.
            await withTaskCancellationHandler {
                await loop()
            } onCancel: {
                source.cancel()
            }
        }
    }

    private func loop() async {
        var current: KeyRecord? = published.poll() ?? nil
        var failures = 0
        var retryAt: Date?
        var nextInterval = interval.map { clock.now.adding($0) }
        while !Task.isCancelled {
            let needed = current == nil || current?.state == .invalid
            if !needed { failures = 0; retryAt = nil }
            let now = clock.now
            var trigger: KeySource.Trigger?
            if needed, retryAt.map({ $0 <= now }) ?? true {
                trigger = .needed
            } else if let due = nextInterval, due <= now {
                trigger = .interval
            }
            if let trigger {
                let outcome = await source.fetch(trigger)
                if let interval { nextInterval = clock.now.adding(interval) }
                if outcome.backsOff {
                    failures += 1
                    retryAt = clock.now.adding(
                        Self.backoff(failures: failures, min: backoffMin, max: backoffMax, jitter: jitter, random: random()))
                } else {
                    failures = 0
                    retryAt = nil
                }
                if let latest = published.poll() { current = latest }
                continue
            }
            let deadlines = [needed ? retryAt : nil, nextInterval].compactMap { $0 }
            if let latest = await change(until: deadlines.min()) { current = latest }
        }
    }

    /// The next record published before `deadline` (`.none` when it passed).
    private func change(until deadline: Date?) async -> KeyRecord?? {
        let clock = self.clock
        let published = self.published
        return await withTaskGroup(of: KeyRecord??.self) { group in
            if let deadline {
                group.addTask {
                    try? await clock.sleep(for: deadline.since(clock.now))
                    return .none
                }
            }
            group.addTask {
                await published.changed()
                return published.poll()
            }
            let first = await group.next() ?? .none
            group.cancelAll()
            return first
        }
    }
}
