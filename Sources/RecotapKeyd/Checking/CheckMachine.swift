import Foundation
import Logging

/// The check logic of README "Checking the key" as plain values: a ``Phase`` per key,
/// what is known about the API's health and the on-demand budget, and one transition
/// function, ``handle(_:now:random:)``, that turns an ``Event`` into ``Effect``s.
///
/// Nothing here waits, reads a clock, draws a random number or touches the store:
/// time and jitter come in as values (`now`, `random` in [0, 1)), so every rule can be
/// tested as a table (`CheckMachineTests`). ``KeyChecker`` feeds the events — a key
/// published by the store, the scheduler's rounds, requests from local peers, the
/// API's answers — and performs the effects: requests, store writes, journal
/// entries, `STATUS=` and the answers to whoever asked.
public struct CheckMachine: Sendable, Equatable {
    /// Where the active key is in its checking.
    public enum Phase: Sendable, Equatable {
        /// No active key: nothing to check.
        case noKey
        /// The next regular check is due at `at` (the start check and a newly activated
        /// key: due at once).
        case scheduled(at: Date)
        /// The last `failures` checks were unreachable or rate limited: the next try is
        /// at `at` (backoff, or the API's `Retry-After`).
        case retrying(at: Date, failures: Int)
        /// A 401 waits for its confirmation, a request sent at `at` (no sooner than
        /// `check.confirm_delay` after it). `failures` carries the backoff count of an
        /// outage the 401 interrupted, or that the confirming request ran into.
        case confirming(at: Date, failures: Int)
        /// Confirmed invalid: never checked again; KEY_STILL_INVALID is due at
        /// `reminderDue` (and every `check.reminder_interval` after).
        case dead(reminderDue: Date)

        /// When the next request is due (`nil`: none will be sent).
        public var checkDue: Date? {
            switch self {
            case .noKey, .dead: nil
            case .scheduled(let at), .retrying(let at, _), .confirming(let at, _): at
            }
        }

        var failures: Int {
            switch self {
            case .retrying(_, let failures), .confirming(_, let failures): failures
            case .noKey, .scheduled, .dead: 0
            }
        }

        var isConfirming: Bool {
            if case .confirming = self { return true }
            return false
        }
    }

    /// Checks have been failing (unreachable or rate limited) since `since`. It is a
    /// fact about the API, not the key: it outlives a key change, and ends with the
    /// next answer that is neither.
    public struct Outage: Sendable, Equatable {
        public var since: Date
        /// When CHECK_DEGRADED was last logged (at most once per reminder interval).
        public var loggedAt: Date
        /// The latest failure's reason, for `STATUS=`.
        public var reason: String?
    }

    /// The on-demand call budget: consumer reports and admin checks together send at
    /// most one request per `check.report_min_interval`.
    public struct Budget: Sendable, Equatable {
        /// When an on-demand check last went to the API.
        public var lastOnDemandAt: Date?
        /// A check asked for within the interval, due at its end; any answer applied
        /// meanwhile answers it.
        public var followUpAt: Date?
    }

    /// A task waiting for the answer of a check, by its token.
    public enum Requester: Sendable, Equatable {
        /// The scheduler's round.
        case scheduler(UInt64)
        /// A request from a local peer, or a newly activated key.
        case onDemand(UInt64, CheckRequestReason)
        /// A request that waited for a 401's confirmation and sends it itself.
        case confirmer(UInt64)

        public var token: UInt64 {
            switch self {
            case .scheduler(let token), .onDemand(let token, _), .confirmer(let token): token
            }
        }
    }

    /// The one request on the wire (checks are serialised) and who waits for it.
    public struct InFlight: Sendable, Equatable {
        public var keyID: Int64
        public var requesters: [Requester]
    }

    public struct StatusLine: Sendable, Equatable {
        public var text: String
        /// Key, state and degradation: a change of kind is published at once, an older
        /// age in the same kind at most every ``CheckMachine/statusRefresh``.
        public var kind: String
        public var at: Date
    }

    public struct RequestErrorLog: Sendable, Equatable {
        public var status: Int?
        public var at: Date
    }

    public enum Event: Sendable, Equatable {
        /// The store committed a change of the active key (or its state); `nil`: none.
        case keyPublished(KeyRecord?)
        /// The latest stored check of a newly published key (see ``Effect/loadLastCheck(keyID:)``).
        case lastCheckLoaded(CheckRecord?, keyID: Int64)
        /// The scheduler's round: do what is due (a check, a follow-up, a reminder).
        case due(token: UInt64)
        /// A check asked for outside the schedule.
        case requested(CheckRequestReason, token: UInt64)
        /// A request that waited for a 401's confirmation reached its time.
        case confirmationDue(token: UInt64)
        /// A waiting request went away (its task was cancelled).
        case requesterGone(token: UInt64)
        /// The answer to the request sent for `keyID`; `nil` when it was abandoned
        /// (cancelled by shutdown, or the key's secret was gone).
        case answered(CheckResult?, keyID: Int64)
        /// A reloaded configuration's `check.*`.
        case reconfigured(KeydConfiguration.Check)
        /// A good moment to refresh `STATUS=` (the end of a round or a request).
        case refreshStatus
    }

    public enum Reply: Sendable, Equatable {
        case done(CheckRequestOutcome)
        /// Ask again with ``Event/confirmationDue(token:)`` at this time: a 401 waits for
        /// its confirmation, and the request wants the confirmed answer.
        case waitUntil(Date)
    }

    public struct LogLine: Sendable, Equatable {
        public var level: Logger.Level
        /// For the events of README "Journal" (their own MESSAGE_ID and priority).
        public var event: KeydEvent?
        public var message: String
        public var metadata: Logger.Metadata
    }

    public enum Effect: Sendable, Equatable {
        /// Send one request for the key `keyID`, in the task of the requester `by`;
        /// its answer comes back as ``Event/answered(_:keyID:)``.
        case send(keyID: Int64, by: UInt64)
        case record(CheckRecord, affectsState: Bool)
        /// Read the latest stored check of a newly published key.
        case loadLastCheck(keyID: Int64)
        case log(LogLine)
        /// `STATUS=` text for systemd.
        case status(String)
        case reply(UInt64, Reply)
    }

    public static let statusRefresh: Duration = .seconds(15)

    public var check: KeydConfiguration.Check
    public let spoolDirectory: String
    /// The active key as last published by the store, without its secret.
    public private(set) var key: KeyRecord?
    public private(set) var phase: Phase = .noKey
    public private(set) var outage: Outage?
    public private(set) var budget = Budget()
    public private(set) var lastCheck: CheckRecord?
    public private(set) var lastRequestError: RequestErrorLog?
    public private(set) var inFlight: InFlight?
    /// Requests waiting for the next answer applied to the key (a 401's confirmation).
    public private(set) var confirmationWaiters: [UInt64] = []
    public private(set) var lastStatus: StatusLine?
    /// Whether a key was published once: the check at start is never skipped, a key
    /// activated later and verified moments before is.
    public private(set) var started = false

    public init(check: KeydConfiguration.Check, spoolDirectory: String) {
        self.check = check
        self.spoolDirectory = spoolDirectory
    }

    /// When the scheduler next has something to do (`nil`: nothing until an event).
    public var nextWake: Date? {
        switch phase {
        case .noKey: return nil
        case .dead(let reminderDue): return reminderDue
        case .confirming(let at, _): return at
        case .scheduled(let at), .retrying(let at, _):
            return budget.followUpAt.map { min($0, at) } ?? at
        }
    }

    /// When the next request for the key is due, for `GET /v1/status`.
    public var nextCheckAt: Date? { phase.checkDue }

    public var degradedSince: Date? { outage?.since }

    /// The pure transition: `(state, event, now, random) → (state, effects)`.
    public static func transition(
        _ state: CheckMachine, _ event: Event, now: Date, random: Double
    ) -> (CheckMachine, [Effect]) {
        var next = state
        let effects = next.handle(event, now: now, random: random)
        return (next, effects)
    }

    /// Applies `event` at `now`; `random` (uniform in [0, 1)) is the jitter of any
    /// interval or backoff the event schedules.
    public mutating func handle(_ event: Event, now: Date, random: Double) -> [Effect] {
        let timing = CheckTiming(check: check, random: { random })
        switch event {
        case .keyPublished(let record):
            return publish(record, now: now, timing: timing)

        case .lastCheckLoaded(let record, let keyID):
            if keyID == key?.id, lastCheck == nil { lastCheck = record }
            return []

        case .due(let token):
            return due(token: token, now: now)

        case .requested(let reason, let token):
            return requested(reason, token: token, now: now)

        case .confirmationDue(let token):
            guard let index = confirmationWaiters.firstIndex(of: token) else { return [] }  // answered meanwhile
            confirmationWaiters.remove(at: index)
            guard let key, key.state != .invalid, phase.isConfirming else {
                return [.reply(token, .done(.noCheckableKey(key?.state)))]
            }
            return start(.confirmer(token))

        case .requesterGone(let token):
            confirmationWaiters.removeAll { $0 == token }
            return []

        case .answered(let result, let keyID):
            return answered(result, keyID: keyID, now: now, timing: timing)

        case .reconfigured(let new):
            check = new
            // A check scheduled further out than the new interval allows is brought
            // forward; a confirmation or a backoff in progress keeps its time.
            if case .scheduled(let at) = phase, at > now.adding(new.interval) {
                phase = .scheduled(at: now.adding(CheckTiming(check: new, random: { random }).nextInterval()))
            }
            lastStatus = nil
            return status(now: now)

        case .refreshStatus:
            return status(now: now)
        }
    }

    // MARK: - Transitions

    /// A different active key resets everything about the previous one (but not what
    /// is known about the API) and is checked at once — unless it is already known
    /// invalid, which is never checked again, or it was activated while running and
    /// verified within the interval (the schedule starts from that verification).
    private mutating func publish(_ record: KeyRecord?, now: Date, timing: CheckTiming) -> [Effect] {
        var record = record
        record?.key = nil
        defer { started = true }
        guard record?.id != key?.id else {
            key = record
            if case .dead = phase {
                key?.state = .invalid
            } else if record?.state == .invalid {
                phase = .dead(reminderDue: now)
            }
            return []
        }
        key = record
        budget.followUpAt = nil
        lastRequestError = nil
        lastCheck = nil
        guard let record else {
            phase = .noKey
            return []
        }
        if record.secretUnavailable != nil {
            // Sealed without the store key that opens it: nothing can be sent.
            phase = .noKey
            return []
        }
        if record.state == .invalid {
            phase = .dead(reminderDue: now)
        } else if started, record.state == .valid, let verified = record.lastVerifiedAt, now.since(verified) < check.interval {
            phase = .scheduled(at: verified.adding(timing.nextInterval()))
        } else {
            phase = .scheduled(at: now)
        }
        return [.loadLastCheck(keyID: record.id)]
    }

    private mutating func due(token: UInt64, now: Date) -> [Effect] {
        let idle: [Effect] = [.reply(token, .done(.noCheckableKey(key?.state)))]
        switch phase {
        case .noKey:
            return idle
        case .dead(let reminderDue):
            guard now >= reminderDue, let key else { return idle }
            phase = .dead(reminderDue: now.adding(check.reminderInterval))
            return [.log(stillInvalid(key))] + idle
        case .scheduled(let at), .retrying(let at, _), .confirming(let at, _):
            if at <= now { return start(.scheduler(token)) }
            if let followUp = budget.followUpAt, followUp <= now, !phase.isConfirming {
                budget.followUpAt = nil
                budget.lastOnDemandAt = now
                return start(.scheduler(token))
            }
            return idle
        }
    }

    private mutating func requested(_ reason: CheckRequestReason, token: UInt64, now: Date) -> [Effect] {
        guard let key, key.state != .invalid, phase.checkDue != nil else {
            return [.reply(token, .done(.noCheckableKey(key?.state)))]
        }
        if case .confirming(let at, _) = phase {
            // The confirmation is already scheduled: a reporter need not wait for it,
            // anyone else gets its answer — never an early second request.
            if reason == .consumerReport {
                return [.reply(token, .done(.debounced(last: lastCheck, retryIn: .zero)))]
            }
            confirmationWaiters.append(token)
            return [.reply(token, .waitUntil(at))]
        }
        if reason.isOnDemand, inFlight == nil {
            if let last = budget.lastOnDemandAt, now.since(last) < check.reportMinInterval {
                let due = last.adding(check.reportMinInterval)
                budget.followUpAt = min(budget.followUpAt ?? due, due)
                return [.reply(token, .done(.debounced(last: lastCheck, retryIn: due.since(now))))]
            }
            budget.lastOnDemandAt = now
        }
        return start(.onDemand(token, reason))
    }

    /// Sends a request for the active key, or joins the one in flight.
    private mutating func start(_ requester: Requester) -> [Effect] {
        if inFlight != nil {
            inFlight?.requesters.append(requester)
            return []
        }
        guard let key else { return [.reply(requester.token, .done(.noCheckableKey(nil)))] }
        inFlight = InFlight(keyID: key.id, requesters: [requester])
        return [.send(keyID: key.id, by: requester.token)]
    }

    private mutating func answered(_ result: CheckResult?, keyID: Int64, now: Date, timing: CheckTiming) -> [Effect] {
        guard let flight = inFlight, flight.keyID == keyID else { return [] }
        inFlight = nil
        guard let result else {
            // Abandoned: the answer says nothing about the key or the API, and what was
            // due stays due.
            return flight.requesters.map { .reply($0.token, .done(.noCheckableKey(key?.state))) }
        }
        guard let key, key.id == keyID else {
            // The key changed while the request was out: record it, act on nothing.
            return [.record(Self.record(result, keyID: keyID, at: now), affectsState: false)]
                + flight.requesters.map { .reply($0.token, .done(.checked(result))) }
        }
        var effects = apply(result, to: key, now: now, timing: timing)
        let waiting = confirmationWaiters
        confirmationWaiters = []
        effects += waiting.map { .reply($0, .done(.checked(result))) }
        for requester in flight.requesters {
            // A first 401: the answer worth giving (to anyone but a reporter) is the
            // confirmed one.
            if case .onDemand(let token, let reason) = requester, reason != .consumerReport,
                result.outcome == .invalid, case .confirming(let at, _) = phase
            {
                confirmationWaiters.append(token)
                effects.append(.reply(token, .waitUntil(at)))
            } else {
                effects.append(.reply(requester.token, .done(.checked(result))))
            }
        }
        return effects
    }

    /// What an answer means for the key (the table of README "Checking the key").
    private mutating func apply(_ result: CheckResult, to active: KeyRecord, now: Date, timing: CheckTiming) -> [Effect] {
        budget.followUpAt = nil
        let failures = phase.failures
        let awaitingConfirmation = phase.isConfirming
        var metadata = Self.metadata(for: result)
        metadata[LogKey.keyFingerprint] = .string(active.fingerprint)
        metadata[LogKey.keyVersion] = .stringConvertible(active.id)
        let fingerprint = active.fingerprint
        var effects: [Effect] = []
        func record(note: String? = nil, affectsState: Bool) {
            let check = Self.record(result, keyID: active.id, at: now, note: note)
            lastCheck = check
            effects.append(.record(check, affectsState: affectsState))
        }
        func log(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) {
            effects.append(.log(LogLine(level: level, event: nil, message: message, metadata: metadata)))
        }
        func log(_ event: KeydEvent, _ message: String, _ metadata: Logger.Metadata) {
            effects.append(.log(LogLine(level: event.level, event: event, message: message, metadata: metadata)))
        }

        switch result.outcome {
        case .valid:
            record(affectsState: true)
            effects += recover(now: now, metadata: metadata)
            phase = .scheduled(at: now.adding(timing.nextInterval()))
            if active.state == .unverified {
                log(.notice, "key \(fingerprint) verified: the API accepts it", metadata)
            } else {
                log(.debug, "key \(fingerprint) valid", metadata)
            }

        case .invalid where !awaitingConfirmation:
            // One 401 is not enough: a flaky proxy or a deploy on Recotap's side can
            // answer one. Ask again shortly before telling anyone the key is dead.
            record(note: "(to be confirmed)", affectsState: false)
            effects += recover(now: now, metadata: metadata)
            phase = .confirming(at: now.adding(check.confirmDelay), failures: failures)
            log(
                .warning,
                "the API answered 401 for key \(fingerprint); confirming in \(DurationParsing.format(check.confirmDelay))",
                metadata)

        case .invalid:
            record(affectsState: true)
            effects += recover(now: now, metadata: metadata)
            phase = .dead(reminderDue: now.adding(check.reminderInterval))
            key?.state = .invalid
            let validFor = now.since(active.activatedAt ?? active.addedAt)
            metadata["key.valid_for"] = .stringConvertible(validFor.components.seconds)
            log(
                .keyInvalidated,
                "Recotap API key \(fingerprint) is no longer valid (HTTP \(result.httpStatus.map(String.init) ?? "401"): \(result.reason ?? "Unauthorized"), confirmed); it had been active for \(Self.human(validFor)). Generate a new key in Recotap (Settings → Workspace → Tech Settings → API Access Key) and drop it into \(spoolDirectory)",
                metadata)

        case .rejectedRequest:
            record(affectsState: false)
            effects += recover(now: now, metadata: metadata)
            let next = now.adding(timing.nextInterval())
            phase = awaitingConfirmation ? .confirming(at: next, failures: 0) : .scheduled(at: next)
            let repeated = lastRequestError.map {
                $0.status == result.httpStatus && now.since($0.at) < check.reminderInterval
            } ?? false
            if !repeated {
                lastRequestError = RequestErrorLog(status: result.httpStatus, at: now)
                let hint = Self.hint(for: result.httpStatus)
                metadata["hint"] = .string(hint)
                log(
                    .apiRequestError,
                    "the API refused the check request: \(result.reason ?? "HTTP \(result.httpStatus ?? 0)") — \(hint); the key's state is unchanged",
                    metadata)
            }

        case .rateLimited, .unreachable:
            record(affectsState: false)
            let failed = failures + 1
            let wait = result.outcome == .rateLimited
                ? timing.afterRateLimit(retryAfter: result.retryAfter, failures: failed)
                : timing.backoff(failures: failed)
            let next = now.adding(wait)
            phase = awaitingConfirmation ? .confirming(at: next, failures: failed) : .retrying(at: next, failures: failed)
            let what = result.outcome == .rateLimited ? "rate limited" : "cannot reach the API"
            if var outage {
                outage.reason = result.reason
                if now.since(outage.loggedAt) >= check.reminderInterval {
                    outage.loggedAt = now
                    log(
                        .checkDegraded,
                        "checks of key \(fingerprint) still failing after \(Self.human(now.since(outage.since))): \(what) (\(result.reason ?? "no answer")); the key stays in use; retrying in \(Self.human(wait))",
                        metadata)
                } else {
                    log(.debug, "check failed: \(result.reason ?? what)", metadata)
                }
                self.outage = outage
            } else {
                outage = Outage(since: now, loggedAt: now, reason: result.reason)
                log(
                    .checkDegraded,
                    "checks of key \(fingerprint) are failing: \(what) (\(result.reason ?? "no answer")); this is not an invalid key, it stays in use; retrying in \(Self.human(wait))",
                    metadata)
            }
        }
        return effects
    }

    /// Any answer from the API other than a 429 (or none at all) ends a degraded period.
    private mutating func recover(now: Date, metadata: Logger.Metadata) -> [Effect] {
        guard let outage else { return [] }
        self.outage = nil
        return [.log(LogLine(
            level: KeydEvent.checkRecovered.level, event: .checkRecovered,
            message: "checks work again after \(Self.human(now.since(outage.since))) of failures", metadata: metadata))]
    }

    private func stillInvalid(_ key: KeyRecord) -> LogLine {
        var metadata: Logger.Metadata = [
            LogKey.keyFingerprint: .string(key.fingerprint), LogKey.keyVersion: .stringConvertible(key.id),
        ]
        if let reason = lastCheck?.reason { metadata[LogKey.reason] = .string(reason) }
        let since = key.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
        return LogLine(
            level: KeydEvent.keyStillInvalid.level, event: .keyStillInvalid,
            message: "Recotap API key \(key.fingerprint) is still invalid\(since); programs using it are failing — drop a new key into \(spoolDirectory)",
            metadata: metadata)
    }

    /// `STATUS=` when the text changes in kind (key, state, degradation), and an older
    /// age at most every ``statusRefresh`` ("checked 40 s ago").
    private mutating func status(now: Date) -> [Effect] {
        var shown = key
        if case .dead = phase { shown?.state = .invalid }
        let text = KeyStatusText.describe(
            active: shown, spoolDirectory: spoolDirectory, now: now, degradedSince: outage?.since,
            failureReason: outage?.reason)
        let kind = "\(shown?.id ?? 0)/\(shown?.state.rawValue ?? "none")/\(outage != nil)"
        if let last = lastStatus {
            if last.text == text { return [] }
            if last.kind == kind && now.since(last.at) < Self.statusRefresh { return [] }
        }
        lastStatus = StatusLine(text: text, kind: kind, at: now)
        return [.status(text)]
    }

    // MARK: - Wording

    static func record(_ result: CheckResult, keyID: Int64, at now: Date, note: String? = nil) -> CheckRecord {
        CheckRecord(
            keyID: keyID, at: now, outcome: result.outcome, httpStatus: result.httpStatus,
            latencyMilliseconds: Int(result.latency.milliseconds),
            reason: [result.reason, note].compactMap { $0 }.joined(separator: " ").nilIfEmpty)
    }

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
