import Foundation
import Logging

/// Why a check was asked for outside the schedule.
public enum CheckRequestReason: String, Sendable {
    /// A new key became active: check it at once.
    case keyActivated = "key_activated"
    /// An administrator asked (`POST /v1/check`). Shares the on-demand budget with
    /// consumer reports.
    case admin
    /// A consumer saw a 401 (`POST /v1/report`).
    case consumerReport = "consumer_report"

    /// Whether the request comes from a local peer and so counts against the
    /// on-demand budget (one check per `check.report_min_interval`).
    var isOnDemand: Bool { self != .keyActivated }
}

/// The answer to a request for a check outside the schedule.
public enum CheckRequestOutcome: Sendable, Equatable {
    case checked(CheckResult)
    /// Within `check.report_min_interval` of the last on-demand check (or, for a
    /// consumer report, while a 401 waits for its confirmation): nothing was sent to
    /// the API. `last` is the latest check of the key, `retryIn` when the next
    /// on-demand check may run.
    case debounced(last: CheckRecord?, retryIn: Duration)
    /// No key, or a key already confirmed invalid (which is never checked again).
    case noCheckableKey(KeyState?)
}

/// What the checker knows beyond the store, for `GET /v1/status`.
public struct CheckerSnapshot: Sendable, Equatable {
    public var lastCheck: CheckRecord?
    /// `nil` with no key, or a key known invalid (never checked again).
    public var nextCheckAt: Date?
    /// Since when checks have been failing (unreachable or rate limited), if they are.
    public var degradedSince: Date?
}

/// Checks the active key against the API and acts on every answer as README "Checking the key"
/// says: confirms a 401 before declaring the key invalid, backs off on outages and
/// rate limits, stops checking a dead key and reminds the journal of it, and logs the
/// events of §7 — once when something starts, at most once per
/// `check.reminder_interval` while it lasts, never once per failed attempt.
///
/// The API call budget, whatever local peers do: on-demand checks (consumer reports
/// and admin requests together) send at most one request per
/// `check.report_min_interval`. One asked for while a check is in flight shares its
/// answer; one asked for within the interval is answered with the latest check and
/// leaves one follow-up check at the interval's end (shared by everyone who asked
/// meanwhile), so a report is never lost; one asked for while a 401 waits for its
/// confirmation waits for that confirmation instead of sending a request early — a
/// 401 is confirmed only by a request made `check.confirm_delay` after it.
///
/// Nothing here sleeps. ``tick()`` does what is due and says when it next has work;
/// the scheduler's loop (``CheckSchedulerService``) does the waiting on an injected
/// clock, which is what lets tests run a day of schedule instantly. Checks are
/// serialised: a request that arrives while one is in flight shares its answer.
public actor KeyChecker {
    private let store: KeyStore
    private let client: any KeyCheckingClient
    private let clock: any SchedulerClock
    private var timing: CheckTiming
    private let spoolDirectory: String
    private let logger: Logger
    private let notifier: SystemdNotifier

    /// The active key as last read from the store (no secret).
    private var key: KeyRecord?
    private var nextCheckAt: Date?
    /// Consecutive unreachable / rate-limited answers, for the backoff.
    private var failures = 0
    /// A 401 was seen and waits for the confirming request.
    private var awaitingConfirmation = false
    private var degradedSince: Date?
    private var lastDegradedLogAt: Date?
    private var lastFailure: CheckResult?
    private var lastRequestErrorLog: (status: Int?, at: Date)?
    private var lastReminderAt: Date?
    /// When an on-demand check last went to the API (the budget's clock).
    private var lastOnDemandAt: Date?
    /// An on-demand check asked for within the budget's interval, due at its end;
    /// any check that completes meanwhile answers it.
    private var followUpAt: Date?
    private var lastCheck: CheckRecord?
    /// The latest answer applied to the active key, and how many have been: lets a
    /// request that waited for a confirmation see whether the confirmation ran.
    private var lastResult: CheckResult?
    private var resultsApplied: UInt64 = 0
    private var inFlight: Task<CheckResult?, Never>?
    private var lastStatus: (text: String, kind: String, at: Date)?
    /// Whether the active key has been read once (the check at start is never skipped).
    private var hasSynced = false

    public init(
        store: KeyStore, client: any KeyCheckingClient, clock: any SchedulerClock, timing: CheckTiming,
        spoolDirectory: String, logger: Logger, notifier: SystemdNotifier
    ) {
        self.store = store
        self.client = client
        self.clock = clock
        self.timing = timing
        self.spoolDirectory = spoolDirectory
        self.logger = logger
        self.notifier = notifier
    }

    private var check: KeydConfiguration.Check { timing.check }

    // MARK: - Driving

    /// Does whatever is due now — a check, a reminder — and returns when there is next
    /// something to do (`nil`: nothing until a key arrives).
    @discardableResult
    public func tick() async -> Date? {
        await syncActiveKey(now: clock.now)
        if let key, key.state != .invalid {
            if let due = nextCheckAt, due <= clock.now {
                _ = await performCheck()
            } else if let followUp = followUpAt, followUp <= clock.now, !awaitingConfirmation {
                followUpAt = nil
                lastOnDemandAt = clock.now
                _ = await performCheck()
            }
        }
        let now = clock.now
        if let key, key.state == .invalid {
            remindIfDue(now: now)
        }
        publishStatus(now: now)
        return nextWake()
    }

    /// A check now, outside the schedule (see ``CheckRequestReason``), within the
    /// on-demand budget described on the type.
    public func checkNow(reason: CheckRequestReason) async -> CheckRequestOutcome {
        let now = clock.now
        await syncActiveKey(now: now)
        guard let key, key.state != .invalid else { return .noCheckableKey(key?.state) }
        if awaitingConfirmation {
            // The confirmation is already scheduled: a reporter need not wait for it,
            // anyone else gets its answer — never an early second request.
            if reason == .consumerReport { return .debounced(last: lastCheck, retryIn: .zero) }
            return await confirmed()
        }
        if reason.isOnDemand, inFlight == nil {
            if let last = lastOnDemandAt, now.since(last) < check.reportMinInterval {
                let due = last.adding(check.reportMinInterval)
                followUpAt = min(followUpAt ?? due, due)
                return .debounced(last: lastCheck, retryIn: due.since(now))
            }
            lastOnDemandAt = now
        }
        logger.debug("check requested", metadata: ["check.reason": .string(reason.rawValue)])
        let result = await performCheck()
        publishStatus(now: clock.now)
        guard let result else { return .noCheckableKey(self.key?.state) }
        // A first 401: the answer worth giving is the confirmed one.
        if result.outcome == .invalid, awaitingConfirmation, reason != .consumerReport {
            return await confirmed()
        }
        return .checked(result)
    }

    /// Waits until the pending 401 is confirmed — by the scheduler's request at
    /// `confirm_delay`, or by this one's if the scheduler has not sent it by then — and
    /// returns that answer.
    private func confirmed() async -> CheckRequestOutcome {
        let applied = resultsApplied
        if let due = nextCheckAt, due > clock.now {
            do {
                try await clock.sleep(for: due.since(clock.now))
            } catch {
                return .noCheckableKey(key?.state)
            }
        }
        if resultsApplied == applied, awaitingConfirmation, key?.state != .invalid {
            _ = await performCheck()
            publishStatus(now: clock.now)
        }
        guard let lastResult, resultsApplied != applied else { return .noCheckableKey(key?.state) }
        return .checked(lastResult)
    }

    /// A new key was activated (by the spool): pick it up now and check it, unless it
    /// was verified moments ago.
    public func keyActivated() async {
        await tick()
    }

    /// A reloaded configuration's `check.*`, in force from now on. A check scheduled
    /// further out than the new interval allows is brought forward; a confirmation or
    /// a backoff in progress keeps its time.
    public func reconfigure(_ timing: CheckTiming) {
        self.timing = timing
        let now = clock.now
        if let due = nextCheckAt, !awaitingConfirmation, failures == 0, due > now.adding(timing.check.interval) {
            nextCheckAt = now.adding(timing.nextInterval())
        }
        lastStatus = nil
        publishStatus(now: now)
    }

    public func snapshot() -> CheckerSnapshot {
        CheckerSnapshot(
            lastCheck: lastCheck, nextCheckAt: key?.state == .invalid ? nil : nextCheckAt, degradedSince: degradedSince)
    }

    private func nextWake() -> Date? {
        guard let key else { return nil }
        if key.state == .invalid {
            return (lastReminderAt ?? clock.now).adding(check.reminderInterval)
        }
        guard let followUpAt, !awaitingConfirmation else { return nextCheckAt }
        return nextCheckAt.map { min($0, followUpAt) } ?? followUpAt
    }

    // MARK: - The active key

    /// Follows the store: a different active key (activated by the spool, or present
    /// at start) resets everything about the previous one and is checked at once —
    /// unless it is already known invalid, which is never checked again.
    private func syncActiveKey(now: Date) async {
        let active: KeyRecord?
        do {
            active = try await store.activeKey()
        } catch {
            logger.error("cannot read the active key from the store", metadata: [LogKey.error: "\(error)"])
            return
        }
        let stripped = active.map { record -> KeyRecord in
            var copy = record
            copy.key = nil
            return copy
        }
        guard stripped?.id != key?.id else {
            key = stripped
            hasSynced = true
            return
        }
        key = stripped
        failures = 0
        awaitingConfirmation = false
        followUpAt = nil
        lastReminderAt = nil
        lastRequestErrorLog = nil
        lastCheck = nil
        if let stripped {
            lastCheck = (try? await store.checks(keyID: stripped.id, limit: 1))?.first
            if stripped.state == .invalid {
                nextCheckAt = nil
            } else if hasSynced, stripped.state == .valid, let verified = stripped.lastVerifiedAt,
                now.since(verified) < check.interval
            {
                // Activated while running and verified just before: the schedule starts
                // from that verification. (At start, the first check is never skipped.)
                nextCheckAt = verified.adding(timing.nextInterval())
            } else {
                nextCheckAt = now
            }
        } else {
            nextCheckAt = nil
        }
        hasSynced = true
    }

    // MARK: - Checking

    private func performCheck() async -> CheckResult? {
        if let inFlight { return await inFlight.value }
        let task = Task { await self.executeCheck() }
        inFlight = task
        // Cancelling the caller (graceful shutdown) cancels the request on the wire
        // instead of waiting for its timeout.
        let result = await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() }
        inFlight = nil
        return result
    }

    private func executeCheck() async -> CheckResult? {
        let active: KeyRecord
        do {
            guard let found = try await store.activeKey(), found.state != .invalid else { return nil }
            active = found
        } catch {
            logger.error("cannot read the active key from the store", metadata: [LogKey.error: "\(error)"])
            nextCheckAt = clock.now.adding(timing.backoff(failures: max(1, failures)))
            return nil
        }
        guard let secret = active.key else { return nil }
        let result = await client.check(secret)
        // Cancelled by shutdown: the answer says nothing about the key or the API.
        if Task.isCancelled { return nil }
        let now = clock.now
        guard active.id == key?.id else {
            // The key changed while the request was out: record it, act on nothing.
            _ = try? await store.record(check: record(result, keyID: active.id, at: now), affectsState: false)
            return result
        }
        await apply(result, to: active, at: now)
        return result
    }

    private func record(_ result: CheckResult, keyID: Int64, at now: Date, note: String? = nil) -> CheckRecord {
        CheckRecord(
            keyID: keyID, at: now, outcome: result.outcome, httpStatus: result.httpStatus,
            latencyMilliseconds: Int(result.latency.milliseconds),
            reason: [result.reason, note].compactMap { $0 }.joined(separator: " ").nilIfEmpty)
    }

    /// Stores the check and applies its effect on the key's state; returns the key as
    /// it is afterwards.
    @discardableResult
    private func store(_ check: CheckRecord, affectsState: Bool) async -> KeyRecord? {
        lastCheck = check
        do {
            let updated = try await store.record(check: check, affectsState: affectsState)
            key = updated
            return updated
        } catch {
            logger.error("cannot record a check in the store", metadata: [LogKey.error: "\(error)"])
            return nil
        }
    }

    private func apply(_ result: CheckResult, to active: KeyRecord, at now: Date) async {
        lastResult = result
        resultsApplied &+= 1
        followUpAt = nil
        var metadata = Self.metadata(for: result)
        metadata[LogKey.keyFingerprint] = .string(active.fingerprint)
        metadata[LogKey.keyVersion] = .stringConvertible(active.id)
        let fingerprint = active.fingerprint

        switch result.outcome {
        case .valid:
            await store(record(result, keyID: active.id, at: now), affectsState: true)
            recover(at: now, metadata: metadata)
            failures = 0
            awaitingConfirmation = false
            nextCheckAt = now.adding(timing.nextInterval())
            if active.state == .unverified {
                logger.notice("key \(fingerprint) verified: the API accepts it", metadata: metadata)
            } else {
                logger.debug("key \(fingerprint) valid", metadata: metadata)
            }

        case .invalid where !awaitingConfirmation:
            // One 401 is not enough: a flaky proxy or a deploy on Recotap's side can
            // answer one. Ask again shortly before telling anyone the key is dead.
            await store(record(result, keyID: active.id, at: now, note: "(to be confirmed)"), affectsState: false)
            recover(at: now, metadata: metadata)
            awaitingConfirmation = true
            nextCheckAt = now.adding(check.confirmDelay)
            logger.warning(
                "the API answered 401 for key \(fingerprint); confirming in \(DurationParsing.format(check.confirmDelay))",
                metadata: metadata)

        case .invalid:
            let updated = await store(record(result, keyID: active.id, at: now), affectsState: true)
            recover(at: now, metadata: metadata)
            awaitingConfirmation = false
            nextCheckAt = nil
            lastReminderAt = now
            let since = active.activatedAt ?? active.addedAt
            let validFor = now.since(since)
            metadata["key.valid_for"] = .stringConvertible(validFor.components.seconds)
            if updated == nil { key?.state = .invalid }
            logger.event(
                .keyInvalidated,
                "Recotap API key \(fingerprint) is no longer valid (HTTP \(result.httpStatus.map(String.init) ?? "401"): \(result.reason ?? "Unauthorized"), confirmed); it had been active for \(Self.human(validFor)). Generate a new key in Recotap (Settings → Workspace → Tech Settings → API Access Key) and drop it into \(spoolDirectory)",
                metadata: metadata)

        case .rejectedRequest:
            await store(record(result, keyID: active.id, at: now), affectsState: false)
            recover(at: now, metadata: metadata)
            failures = 0
            nextCheckAt = now.adding(timing.nextInterval())
            let repeated = lastRequestErrorLog.map {
                $0.status == result.httpStatus && now.since($0.at) < check.reminderInterval
            } ?? false
            if !repeated {
                lastRequestErrorLog = (result.httpStatus, now)
                let hint = Self.hint(for: result.httpStatus)
                metadata["hint"] = .string(hint)
                logger.event(
                    .apiRequestError,
                    "the API refused the check request: \(result.reason ?? "HTTP \(result.httpStatus ?? 0)") — \(hint); the key's state is unchanged",
                    metadata: metadata)
            }

        case .rateLimited, .unreachable:
            await store(record(result, keyID: active.id, at: now), affectsState: false)
            failures += 1
            lastFailure = result
            let wait = result.outcome == .rateLimited
                ? timing.afterRateLimit(retryAfter: result.retryAfter, failures: failures)
                : timing.backoff(failures: failures)
            nextCheckAt = now.adding(wait)
            let what = result.outcome == .rateLimited ? "rate limited" : "cannot reach the API"
            if let since = degradedSince {
                if let last = lastDegradedLogAt, now.since(last) >= check.reminderInterval {
                    lastDegradedLogAt = now
                    logger.event(
                        .checkDegraded,
                        "checks of key \(fingerprint) still failing after \(Self.human(now.since(since))): \(what) (\(result.reason ?? "no answer")); the key stays in use; retrying in \(Self.human(wait))",
                        metadata: metadata)
                } else {
                    logger.debug("check failed: \(result.reason ?? what)", metadata: metadata)
                }
            } else {
                degradedSince = now
                lastDegradedLogAt = now
                logger.event(
                    .checkDegraded,
                    "checks of key \(fingerprint) are failing: \(what) (\(result.reason ?? "no answer")); this is not an invalid key, it stays in use; retrying in \(Self.human(wait))",
                    metadata: metadata)
            }
        }
    }

    /// Any answer from the API other than a 429 ends a degraded period.
    private func recover(at now: Date, metadata: Logger.Metadata) {
        guard let since = degradedSince else { return }
        degradedSince = nil
        lastDegradedLogAt = nil
        lastFailure = nil
        logger.event(.checkRecovered, "checks work again after \(Self.human(now.since(since))) of failures", metadata: metadata)
    }

    private func remindIfDue(now: Date) {
        guard let key, key.state == .invalid else { return }
        if let last = lastReminderAt, now.since(last) < check.reminderInterval { return }
        lastReminderAt = now
        var metadata: Logger.Metadata = [
            LogKey.keyFingerprint: .string(key.fingerprint), LogKey.keyVersion: .stringConvertible(key.id),
        ]
        if let reason = lastCheck?.reason { metadata[LogKey.reason] = .string(reason) }
        let since = key.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
        logger.event(
            .keyStillInvalid,
            "Recotap API key \(key.fingerprint) is still invalid\(since); programs using it are failing — drop a new key into \(spoolDirectory)",
            metadata: metadata)
    }

    // MARK: - STATUS=

    /// Sends `STATUS=` when the state changes, and otherwise at most every 15 s (the
    /// text carries an age, "checked 40 s ago").
    private func publishStatus(now: Date) {
        let text = KeyStatusText.describe(
            active: key, spoolDirectory: spoolDirectory, now: now, degradedSince: degradedSince,
            failureReason: lastFailure?.reason)
        let kind = "\(key?.id ?? 0)/\(key?.state.rawValue ?? "none")/\(degradedSince != nil)"
        if let last = lastStatus {
            if last.text == text { return }
            if last.kind == kind && now.since(last.at) < .seconds(15) { return }
        }
        lastStatus = (text, kind, now)
        notifier.status(text)
    }

    // MARK: - Wording

    static func metadata(for result: CheckResult) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            LogKey.checkOutcome: .string(result.outcome.rawValue),
            LogKey.latencyMilliseconds: .stringConvertible(result.latency.milliseconds),
        ]
        if let status = result.httpStatus { metadata[LogKey.httpStatus] = .stringConvertible(status) }
        if let reason = result.reason { metadata[LogKey.reason] = .string(reason) }
        return metadata
    }

    static func hint(for status: Int?) -> String {
        switch status {
        case 403: "API access is probably not enabled for the workspace: ask a Recotap workspace admin"
        case 404: "check api.base_url (it should end in /api/v1)"
        case .some(300..<400): "check api.base_url and any proxy: redirects are never followed"
        case 400: "the API did not accept the request: check api.base_url"
        default: "a configuration or account problem, not the key"
        }
    }

    /// "40 s", "12 min", "3 h 5 min", "2 d 4 h".
    static func human(_ duration: Duration) -> String {
        let seconds = max(0, Saturating.int(Saturating.int64(duration.seconds.rounded()) ?? 0))
        switch seconds {
        case ..<120: return "\(seconds) s"
        case ..<7200: return "\(seconds / 60) min"
        case ..<172_800: return "\(seconds / 3600) h \(seconds % 3600 / 60) min"
        default: return "\(seconds / 86_400) d \(seconds % 86_400 / 3600) h"
        }
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
