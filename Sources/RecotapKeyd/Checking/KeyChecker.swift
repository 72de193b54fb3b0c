import Foundation
import Logging
import Synchronization

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
/// events of README "Journal" — once when something starts, at most once per
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
/// The rules live in ``CheckMachine``, a pure transition function; this actor is the
/// thin part that feeds it events and performs its effects: requests (in the task of
/// whoever asked, so cancelling it cancels the request), store writes, journal
/// entries, `STATUS=`, answers. It follows the active key through the store's
/// published stream (``CurrentKey/changes()``) — taking any record published since it
/// last looked before it acts on anything, so a check never runs on a key older than
/// the last commit — and never reads the active key from the store.
///
/// Nothing here sleeps on the schedule. ``tick()`` does what is due and says when it
/// next has work; the scheduler's loop (``CheckSchedulerService``) does the waiting
/// on an injected clock (``waitForWork(until:)``), which is what lets tests run a day
/// of schedule instantly. Checks are serialised: a request that arrives while one is
/// in flight shares its answer.
public actor KeyChecker {
    private let store: KeyStore
    private let client: any KeyCheckingClient
    private let clock: any SchedulerClock
    private var timing: CheckTiming
    private let logger: Logger
    private let notifier: SystemdNotifier
    private let published: CurrentKey.Subscription
    private let metrics: KeydMetrics?
    /// Rung when the next wake-up may have moved earlier outside a round (a request,
    /// a reload) and by the watchdog's probes: the scheduler's loop runs a round.
    public nonisolated let wakeups = Wakeup()

    private var machine: CheckMachine
    /// The secret of the key the machine knows, from the same published record.
    private var secret: (id: Int64, key: APIKey)?
    private var nextToken: UInt64 = 0
    /// Answers for tokens whose task has not picked them up yet; the tasks waiting
    /// (resumed by an answer, or by their cancellation); tokens whose task stopped
    /// waiting, whose answers are dropped.
    private var replies: [UInt64: CheckMachine.Reply] = [:]
    private nonisolated let waiting = Mutex<[UInt64: CheckedContinuation<Void, Never>]>([:])
    private var gone: Set<UInt64> = []

    public init(
        store: KeyStore, client: any KeyCheckingClient, clock: any SchedulerClock, timing: CheckTiming,
        spoolDirectory: String, logger: Logger, notifier: SystemdNotifier, metrics: KeydMetrics? = nil
    ) {
        self.metrics = metrics
        self.store = store
        self.client = client
        self.clock = clock
        self.timing = timing
        self.logger = logger
        self.notifier = notifier
        self.published = store.current.changes()
        self.machine = CheckMachine(check: timing.check, spoolDirectory: spoolDirectory)
    }

    // MARK: - Driving

    /// Does whatever is due now — a check, a follow-up, a reminder — and returns when
    /// there is next something to do (`nil`: nothing until a key arrives).
    @discardableResult
    public func tick() async -> Date? {
        await takePublished()
        let token = newToken()
        await handle(.due(token: token))
        // Cancelled (shutdown) while joined to a request another task sent: the round
        // ends without its answer.
        _ = await reply(for: token)
        await handle(.refreshStatus)
        return machine.nextWake
    }

    /// Waits until there may be something to do: `deadline` (the last ``tick()``'s
    /// answer) has come, the store published a key, or ``wakeups`` was rung. Returns
    /// at once when the task is cancelled.
    public nonisolated func waitForWork(until deadline: Date?) async {
        let clock = self.clock
        let published = self.published
        let wakeups = self.wakeups
        if let deadline, deadline.since(clock.now) <= .zero { return }
        await withTaskGroup(of: Void.self) { group in
            if let deadline {
                group.addTask { try? await clock.sleep(for: deadline.since(clock.now)) }
            }
            group.addTask { await published.changed() }
            group.addTask { await wakeups.wait() }
            await group.next()
            group.cancelAll()
        }
    }

    /// A check now, outside the schedule (see ``CheckRequestReason``), within the
    /// on-demand budget described on the type.
    public func checkNow(reason: CheckRequestReason) async -> CheckRequestOutcome {
        await takePublished()
        let wakeBefore = machine.nextWake
        defer { if machine.nextWake != wakeBefore { wakeups.ring() } }
        let token = newToken()
        let effects = await handle(.requested(reason, token: token))
        // Answered at once (debounced, or nothing to check): no request, nothing new
        // to publish.
        if case .reply(token, .done(let outcome))? = effects.first {
            replies[token] = nil
            return outcome
        }
        var reply = await reply(for: token)
        while case .waitUntil(let at)? = reply {
            if at > clock.now {
                do {
                    try await clock.sleep(for: at.since(clock.now))
                } catch {
                    await handle(.requesterGone(token: token))
                    return .noCheckableKey(machine.key?.state)
                }
            }
            await takePublished()
            await handle(.confirmationDue(token: token))
            reply = await self.reply(for: token)
        }
        if reply == nil { await handle(.requesterGone(token: token)) }
        await handle(.refreshStatus)
        guard case .done(let outcome)? = reply else { return .noCheckableKey(machine.key?.state) }
        return outcome
    }

    /// A reloaded configuration's `check.*`, in force from now on. A check scheduled
    /// further out than the new interval allows is brought forward; a confirmation or
    /// a backoff in progress keeps its time.
    public func reconfigure(_ timing: CheckTiming) async {
        self.timing = timing
        await handle(.reconfigured(timing.check))
        wakeups.ring()
    }

    /// What the checker knows, as of the latest commit.
    public func snapshot() async -> CheckerSnapshot {
        await takePublished()
        return CheckerSnapshot(lastCheck: machine.lastCheck, nextCheckAt: machine.nextCheckAt, degradedSince: machine.degradedSince)
    }

    // MARK: - Events and effects

    private func newToken() -> UInt64 {
        nextToken &+= 1
        return nextToken
    }

    /// Hands the machine whatever the store published since the last look.
    private func takePublished() async {
        while let record = published.poll() {
            if let record, let key = record.key {
                secret = (record.id, key)
            } else if record == nil {
                secret = nil
            }
            await handle(.keyPublished(record))
        }
    }

    @discardableResult
    private func handle(_ event: CheckMachine.Event) async -> [CheckMachine.Effect] {
        let effects = machine.handle(event, now: clock.now, random: timing.random())
        for effect in effects {
            await perform(effect)
        }
        return effects
    }

    private func perform(_ effect: CheckMachine.Effect) async {
        switch effect {
        case .send(let keyID, _):
            // Sent in the task of the requester that caused it: cancelling that task
            // (graceful shutdown) cancels the request on the wire instead of waiting
            // for its timeout.
            guard let secret, secret.id == keyID else {
                await handle(.answered(nil, keyID: keyID))
                return
            }
            let result = await client.check(secret.key)
            // Cancelled by shutdown: the answer says nothing about the key or the API.
            let answered = Task.isCancelled ? nil : result
            if let answered { metrics?.checked(answered, keyID: keyID, at: clock.now) }
            await handle(.answered(answered, keyID: keyID))

        case .record(let check, let affectsState):
            do {
                try await store.record(check: check, affectsState: affectsState)
            } catch {
                logger.error("cannot record a check in the store", metadata: [LogKey.error: "\(error)"])
            }
            // The store published the key's new state (if it changed): take it now.
            await takePublished()

        case .loadLastCheck(let keyID):
            let last = (try? await store.checks(keyID: keyID, limit: 1))?.first
            if let last { metrics?.noteCheck(keyID: keyID, at: last.at) }
            await handle(.lastCheckLoaded(last, keyID: keyID))

        case .log(let line):
            if let event = line.event {
                if event == .keyInvalidated { metrics?.keyInvalidated() }
                logger.event(event, "\(line.message)", metadata: line.metadata)
            } else {
                logger.log(level: line.level, "\(line.message)", metadata: line.metadata)
            }

        case .status(let text):
            notifier.status(text)

        case .reply(let token, let reply):
            if gone.remove(token) != nil { return }
            replies[token] = reply
            waiting.withLock { $0.removeValue(forKey: token) }?.resume()
        }
    }

    /// The answer for `token`, waiting for it if it has not come yet; `nil` when the
    /// task is cancelled first (its answer, when it comes, is dropped).
    private func reply(for token: UInt64) async -> CheckMachine.Reply? {
        while true {
            if let reply = replies.removeValue(forKey: token) { return reply }
            if Task.isCancelled {
                gone.insert(token)
                return nil
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let stored = waiting.withLock { waiting -> Bool in
                        if Task.isCancelled { return false }
                        waiting[token] = continuation
                        return true
                    }
                    if !stored { continuation.resume() }
                }
            } onCancel: {
                waiting.withLock { $0.removeValue(forKey: token) }?.resume()
            }
        }
    }
}
