import Foundation
import Logging

/// What a re-verification or a rollback came to.
public enum RecoveryOutcome: Sendable, Equatable {
    /// The API accepted the key and it is the active key again, under a new version;
    /// `from` is the history entry (version) it came from.
    case reinstated(Activation, from: Int64, verification: CheckResult)
    /// The API was asked and did not accept the key (or could not be reached):
    /// nothing changed. `reason` says what it answered, for people.
    case refused(reason: String, verification: CheckResult)
    /// Within `check.report_min_interval` of the last such request: the API was not
    /// asked, nothing changed.
    case tooSoon(retryIn: Duration)
    /// Nothing to ask about: `code` is stable (`not_invalid`, `no_key`,
    /// `no_previous_key`, `secret_erased`, `sealed`, `changed`, `store_error`), `reason` is for people.
    case unavailable(code: String, reason: String)
}

/// The controls for a bad day (README "Undoing a mistake"): re-verifying a key that was
/// declared invalid — a 401 that Recotap answered by mistake — and rolling back to the
/// key retired last — a key of the wrong Recotap user dropped into the spool.
///
/// Either asks the API about one specific key first and changes nothing unless the
/// check comes out `valid` (a 2xx, as for any check). The key then becomes active under a **new version** (a new row in the
/// store, holding the same secret): versions only ever grow, so every consumer
/// following them takes it like any rotation, and the checker sees a new key (checked
/// on the usual schedule from this verification) instead of a dead one coming back.
///
/// The call budget: these requests go to the API at most once per
/// `check.report_min_interval` for admins on `keyd.sock` (re-verifications and
/// rollbacks together), and once per interval for writers of the spool dropping dead
/// keys again — two budgets, so a spool writer re-dropping a dead key in a loop never
/// keeps an admin from acting.
public actor KeyRecovery {
    /// The `source` of a key an admin re-verified, and the start of one rolled back to.
    public static let reverifiedSource = "re-verified"
    public static let rollbackSourcePrefix = "rollback to version "
    private let store: KeyStore
    private let client: any KeyCheckingClient
    private let clock: any SchedulerClock
    private let logger: Logger
    private var minInterval: Duration
    /// Who spends a budget: admins on `keyd.sock`, or writers of the spool.
    enum Asker: Hashable { case admin, spool }
    private var lastAskedAt: [Asker: Date] = [:]

    public init(
        store: KeyStore, client: any KeyCheckingClient, clock: any SchedulerClock, minInterval: Duration,
        logger: Logger
    ) {
        self.store = store
        self.client = client
        self.clock = clock
        self.minInterval = minInterval
        self.logger = logger
    }

    /// A reloaded `check.report_min_interval`.
    public func reconfigure(minInterval: Duration) { self.minInterval = minInterval }

    /// `POST /v1/reverify`: asks the API again about the active key, which must have
    /// been declared invalid.
    public func reverifyActive(metadata extra: Logger.Metadata = [:]) async -> RecoveryOutcome {
        let active: KeyRecord?
        do { active = try await store.activeKey() } catch { return storeFailed(error) }
        guard let active else {
            return .unavailable(code: "no_key", reason: "there is no active key to re-verify")
        }
        guard active.state == .invalid else {
            return .unavailable(
                code: "not_invalid",
                reason: "the active key \(active.fingerprint) is \(active.state.rawValue), not declared invalid: there is nothing to re-verify (POST /v1/check checks it)")
        }
        if let why = active.secretUnavailable {
            return .unavailable(code: "sealed", reason: "key \(active.fingerprint) cannot be read: \(why)")
        }
        guard let secret = active.key else {
            return .unavailable(code: "store_error", reason: "the secret of the active key \(active.fingerprint) is missing from the store")
        }
        return await reverify(secret, dead: active, active: active, source: Self.reverifiedSource, by: .admin, metadata: extra)
    }

    /// A key declared invalid before, dropped into the spool again (`source`: the file).
    /// `dead` is its newest row; `active` what is active now.
    func reverify(
        _ key: APIKey, dead: KeyRecord, active: KeyRecord?, source: String, by asker: Asker = .spool,
        metadata extra: Logger.Metadata = [:]
    ) async -> RecoveryOutcome {
        let (activation, result): (Activation, CheckResult)
        switch await reinstate(
            key, replacing: active, by: asker, what: "re-verification", source: source,
            retireReason: dead.id == active?.id ? "re-verified (the API accepts it again)" : "replaced by a re-verified key",
            metadata: extra)
        {
        case .failure(let outcome): return outcome.value
        case .success(let done): (activation, result) = done
        }
        var metadata = Self.metadata(activation, result, extra)
        metadata[LogKey.reason] = "re-verified"
        metadata["key.reverified_version"] = .stringConvertible(dead.id)
        let since = dead.invalidSince.map { " (declared invalid \($0.formatted(.iso8601)))" } ?? ""
        logger.event(
            .keyActivated,
            "key \(key.fingerprint) re-verified: the API accepts it again\(since); active again as version \(activation.activated.id)",
            metadata: metadata)
        return .reinstated(activation, from: dead.id, verification: result)
    }

    /// `POST /v1/rollback`: the key retired last becomes active again, if its secret is
    /// still held and the API accepts it now.
    public func rollback(metadata extra: Logger.Metadata = [:]) async -> RecoveryOutcome {
        let active: KeyRecord?
        let previous: KeyRecord?
        do {
            active = try await store.activeKey()
            previous = try await store.previousKey()
        } catch {
            return storeFailed(error)
        }
        guard let previous else {
            return .unavailable(code: "no_previous_key", reason: "no key was retired before the active one: there is nothing to roll back to")
        }
        if let why = previous.secretUnavailable {
            return .unavailable(code: "sealed", reason: "key \(previous.fingerprint) (version \(previous.id)) cannot be read: \(why)")
        }
        guard let secret = previous.key else {
            let when = previous.secretErasedAt.map { " on \($0.formatted(.iso8601))" } ?? ""
            return .unavailable(
                code: "secret_erased",
                reason: "the secret of version \(previous.id) (\(previous.fingerprint)) was erased\(when) as the retention policy promises; drop that key into the spool instead")
        }
        let (activation, result): (Activation, CheckResult)
        switch await reinstate(
            secret, replacing: active, by: .admin, what: "rollback", source: Self.rollbackSourcePrefix + String(previous.id),
            retireReason: "rolled back to version \(previous.id)", metadata: extra)
        {
        case .failure(let outcome): return outcome.value
        case .success(let done): (activation, result) = done
        }
        var metadata = Self.metadata(activation, result, extra)
        metadata["rolled_back_from_version"] = .stringConvertible(previous.id)
        let replacing = activation.retired.map { ", replacing \($0.fingerprint)" } ?? ""
        logger.event(
            .keyRolledBack,
            "rolled back to key \(previous.fingerprint) (version \(previous.id)), active again as version \(activation.activated.id)\(replacing)",
            metadata: metadata)
        return .reinstated(activation, from: previous.id, verification: result)
    }

    // MARK: - Parts

    /// A `RecoveryOutcome` that ends the attempt early, as an `Error` for `Result`.
    struct Ended: Error { let value: RecoveryOutcome }

    /// Within `asker`'s budget, asks the API about `key` and, if it accepts it, makes
    /// it active under a new version — only if `active` is still the active key.
    private func reinstate(
        _ key: APIKey, replacing active: KeyRecord?, by asker: Asker, what: String, source: String,
        retireReason: String, metadata extra: Logger.Metadata
    ) async -> Result<(Activation, CheckResult), Ended> {
        if let wait = budgetWait(asker) { return .failure(Ended(value: .tooSoon(retryIn: wait))) }
        let result = await client.check(key)
        guard result.outcome == .valid else {
            let outcome = RecoveryOutcome.refused(reason: Self.refusal(result, fingerprint: key.fingerprint), verification: result)
            logRefusal(outcome, fingerprint: key.fingerprint, what: what, metadata: extra)
            return .failure(Ended(value: outcome))
        }
        do {
            let activation = try await store.addAndActivate(
                key, source: source, state: .valid, at: clock.now, retireReason: retireReason,
                verification: CheckMachine.record(result, keyID: 0, at: clock.now, note: "(\(what))"),
                replacing: .some(active?.id))
            return .success((activation, result))
        } catch {
            return .failure(Ended(value: storeFailed(error)))
        }
    }

    /// `nil` and the budget spent when a request may go now; otherwise how long until one may.
    private func budgetWait(_ asker: Asker) -> Duration? {
        let now = clock.now
        if let last = lastAskedAt[asker], now.since(last) < minInterval, now >= last {
            return last.adding(minInterval).since(now)
        }
        lastAskedAt[asker] = now
        return nil
    }

    private static func refusal(_ result: CheckResult, fingerprint: String) -> String {
        let answer = result.reason ?? result.httpStatus.map { "HTTP \($0)" } ?? result.outcome.rawValue
        switch result.outcome {
        case .invalid: return "the API still answers 401 for \(fingerprint) (\(answer)): it stays invalid"
        case .rejectedRequest: return "the API refused the request (\(answer)): \(CheckMachine.hint(for: result.httpStatus))"
        case .unreachable, .rateLimited: return "cannot ask the API now (\(answer)); try again later"
        case .valid: return "accepted"
        }
    }

    private func logRefusal(_ outcome: RecoveryOutcome, fingerprint: String, what: String, metadata extra: Logger.Metadata) {
        guard case .refused(let reason, let result) = outcome else { return }
        var metadata = CheckMachine.metadata(for: result).merging(extra) { _, new in new }
        metadata[LogKey.keyFingerprint] = .string(fingerprint)
        logger.notice("\(what) of key \(fingerprint) refused: \(reason); nothing changed", metadata: metadata)
    }

    private func storeFailed(_ error: any Error) -> RecoveryOutcome {
        if let error = error as? StoreError, error.code == .invalidTransition {
            return .unavailable(code: "changed", reason: "the active key changed meanwhile; nothing was changed, ask again")
        }
        logger.error("the store failed", metadata: [LogKey.error: "\(error)"])
        return .unavailable(code: "store_error", reason: "the store failed: \(error)")
    }

    private static func metadata(_ activation: Activation, _ result: CheckResult, _ extra: Logger.Metadata) -> Logger.Metadata {
        var metadata = CheckMachine.metadata(for: result).merging(extra) { _, new in new }
        metadata[LogKey.keyFingerprint] = .string(activation.activated.fingerprint)
        metadata[LogKey.keyVersion] = .stringConvertible(activation.activated.id)
        metadata["key.state"] = .string(activation.activated.state.rawValue)
        if let retired = activation.retired { metadata["key.previous_fingerprint"] = .string(retired.fingerprint) }
        return metadata
    }
}
