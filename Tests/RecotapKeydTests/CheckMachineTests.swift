import Foundation
import Logging
import Testing

@testable import RecotapKeyd

/// The check rules of README "Checking the key" as a table of plain values: a state,
/// an event at a time, and the next state and effects. No clock, store, API or actor.
private let t0 = Date(timeIntervalSince1970: 1_800_000_000)
private func at(_ seconds: Double) -> Date { t0.addingTimeInterval(seconds) }

/// The defaults without jitter: interval 5 min, confirm_delay 2 s, backoff 15 s…5 min,
/// report_min_interval 10 s, reminder_interval 1 h.
private var defaults: KeydConfiguration.Check {
    var check = KeydConfiguration.defaults.check
    check.jitter = 0
    return check
}

private func record(
    id: Int64 = 1, state: KeyState = .valid, verified: Date? = nil, activated: Date = at(-3600), invalidSince: Date? = nil
) -> KeyRecord {
    KeyRecord(
        id: id, fingerprint: "fp\(id)", key: APIKey(secret: "rtk_machine_test_key_\(id)_0011223344"), source: "test",
        status: .active, state: state, addedAt: activated, activatedAt: activated, retiredAt: nil, retireReason: nil,
        lastVerifiedAt: verified, invalidSince: invalidSince, secretErasedAt: nil)
}

private let valid = CheckResult(outcome: .valid, httpStatus: 200, latency: .milliseconds(5))
private let unauthorized = CheckResult(outcome: .invalid, httpStatus: 401, reason: "Invalid API key", latency: .milliseconds(5))
private let outage = CheckResult(outcome: .unreachable, httpStatus: 503, reason: "HTTP 503", latency: .milliseconds(5))
private func rejected(_ status: Int) -> CheckResult {
    CheckResult(outcome: .rejectedRequest, httpStatus: status, reason: "HTTP \(status)", latency: .milliseconds(5))
}
private func rateLimited(_ retryAfter: Duration?) -> CheckResult {
    CheckResult(outcome: .rateLimited, httpStatus: 429, reason: "HTTP 429", latency: .milliseconds(5), retryAfter: retryAfter)
}

/// A machine and a running list of what it did, driven by terse steps.
private struct Driver {
    var machine: CheckMachine
    var random = 0.5
    private var token: UInt64 = 100

    init(check: KeydConfiguration.Check = defaults) {
        machine = CheckMachine(check: check, spoolDirectory: "/spool")
    }

    /// A machine already running with `key` published (and its start check answered
    /// valid at t0, unless `startCheck` is false).
    static func running(_ key: KeyRecord = record(), check: KeydConfiguration.Check = defaults, startCheck: Bool = true) -> Driver {
        var driver = Driver(check: check)
        driver.handle(.keyPublished(key), at: t0)
        if startCheck {
            driver.check(answer: valid, at: t0)
        }
        return driver
    }

    mutating func nextToken() -> UInt64 {
        token += 1
        return token
    }

    @discardableResult
    mutating func handle(_ event: CheckMachine.Event, at now: Date) -> [CheckMachine.Effect] {
        machine.handle(event, now: now, random: random)
    }

    /// A scheduler round at `now`; returns its effects.
    @discardableResult
    mutating func round(at now: Date) -> [CheckMachine.Effect] {
        handle(.due(token: nextToken()), at: now)
    }

    /// A round that must send a check, answered with `answer` at the same time.
    @discardableResult
    mutating func check(answer: CheckResult, at now: Date) -> [CheckMachine.Effect] {
        let token = nextToken()
        let sent = handle(.due(token: token), at: now)
        let keyID = machine.key!.id
        #expect(sent == [.send(keyID: keyID, by: token)], "a check is due at \(now)")
        return handle(.answered(answer, keyID: keyID), at: now)
    }
}

extension [CheckMachine.Effect] {
    var events: [KeydEvent] {
        compactMap { if case .log(let line) = $0 { line.event } else { nil } }
    }
    var sends: Int {
        count { if case .send = $0 { true } else { false } }
    }
    var records: [(CheckRecord, Bool)] {
        compactMap { if case .record(let record, let affects) = $0 { (record, affects) } else { nil } }
    }
    func reply(_ token: UInt64) -> CheckMachine.Reply? {
        compactMap { if case .reply(token, let reply) = $0 { reply } else { nil } }.first
    }
}

@Suite("Check state machine (transition table on plain values)")
struct CheckMachineTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var answer: CheckResult
        var phase: CheckMachine.Phase
        var affectsState: Bool
        var event: KeydEvent?
        var testDescription: String { "HTTP \(answer.httpStatus ?? 0) → \(answer.outcome.rawValue)" }
    }

    /// README "Checking the key": one answer to a scheduled check of a valid key at t0.
    static let answers: [Row] = [
        Row(answer: valid, phase: .scheduled(at: at(300)), affectsState: true, event: nil),
        Row(answer: unauthorized, phase: .confirming(at: at(2), failures: 0), affectsState: false, event: nil),
        Row(answer: rejected(403), phase: .scheduled(at: at(300)), affectsState: false, event: .apiRequestError),
        Row(answer: rejected(404), phase: .scheduled(at: at(300)), affectsState: false, event: .apiRequestError),
        Row(answer: rejected(400), phase: .scheduled(at: at(300)), affectsState: false, event: .apiRequestError),
        Row(answer: rejected(302), phase: .scheduled(at: at(300)), affectsState: false, event: .apiRequestError),
        Row(answer: rateLimited(.seconds(60)), phase: .retrying(at: at(60), failures: 1), affectsState: false, event: .checkDegraded),
        Row(answer: rateLimited(nil), phase: .retrying(at: at(15), failures: 1), affectsState: false, event: .checkDegraded),
        Row(answer: outage, phase: .retrying(at: at(15), failures: 1), affectsState: false, event: .checkDegraded),
    ]

    @Test("each answer: the next phase, what is stored, what the journal gets", arguments: answers)
    func answerTable(_ row: Row) {
        var driver = Driver.running(record(state: .valid, verified: at(-1)), startCheck: false)
        driver.random = 0  // backoff at its minimum
        let effects = driver.check(answer: row.answer, at: t0)
        #expect(driver.machine.phase == row.phase)
        #expect(effects.records.count == 1)
        #expect(effects.records.first?.1 == row.affectsState)
        #expect(effects.records.first?.0.outcome == row.answer.outcome)
        #expect(effects.events == (row.event.map { [$0] } ?? []))
        #expect(driver.machine.degradedSince == (row.event == .checkDegraded ? t0 : nil))
        #expect(driver.machine.lastCheck?.outcome == row.answer.outcome)
    }

    @Test("a 401 is confirmed by a request confirm_delay later; then the key is dead and never checked again")
    func confirmation() throws {
        var driver = Driver.running()
        let first = driver.check(answer: unauthorized, at: at(300))
        #expect(first.records.first?.0.reason == "Invalid API key (to be confirmed)")
        #expect(first.records.first?.1 == false)
        #expect(first.events.isEmpty, "one 401 is not enough")
        #expect(driver.machine.phase == .confirming(at: at(302), failures: 0))
        #expect(driver.machine.nextWake == at(302))

        #expect(driver.round(at: at(301)).sends == 0, "not before confirm_delay")
        let confirmed = driver.check(answer: unauthorized, at: at(302))
        #expect(confirmed.records.first?.1 == true)
        #expect(confirmed.events == [.keyInvalidated])
        guard case .log(let line)? = confirmed.first(where: { if case .log = $0 { true } else { false } }) else {
            Issue.record("no log line")
            return
        }
        #expect(line.metadata["key.valid_for"] == .stringConvertible(Int64(3902)))
        #expect(line.message.contains("drop it into /spool"))
        #expect(driver.machine.phase == .dead(reminderDue: at(3902)))
        #expect(driver.machine.key?.state == .invalid)
        #expect(driver.machine.nextCheckAt == nil)

        // Never checked again: rounds only remind, hourly.
        #expect(driver.round(at: at(3901)).isEmpty == false)
        #expect(driver.round(at: at(3901)).events.isEmpty)
        #expect(driver.round(at: at(3902)).events == [.keyStillInvalid])
        #expect(driver.machine.phase == .dead(reminderDue: at(7502)))
        #expect(driver.round(at: at(7000)).events.isEmpty)
        #expect(driver.round(at: at(7502)).events == [.keyStillInvalid])
        let admin = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: admin), at: at(7600)) == [.reply(admin, .done(.noCheckableKey(.invalid)))])
    }

    @Test("a key held sealed without its store key is never checked: nothing to send, no wake-up; a readable key published after it is checked at once")
    func unreadableKey() {
        var sealed = record(id: 1)
        sealed.key = nil
        sealed.secretUnavailable = "sealed without the store key"
        var driver = Driver.running(sealed, startCheck: false)
        #expect(driver.machine.phase == .noKey)
        #expect(driver.machine.nextWake == nil)
        #expect(driver.round(at: at(1)).sends == 0)
        let token = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: token), at: at(2)) == [.reply(token, .done(.noCheckableKey(.valid)))])
        _ = driver.handle(.keyPublished(record(id: 2)), at: at(3))
        #expect(driver.machine.phase == .scheduled(at: at(3)))
        #expect(driver.round(at: at(3)).sends == 1)
    }

    @Test("401 then 200 keeps the key; a later single 401 needs its own confirmation")
    func flaky401() {
        var driver = Driver.running()
        driver.check(answer: unauthorized, at: at(300))
        let recovered = driver.check(answer: valid, at: at(302))
        #expect(recovered.events.isEmpty)
        #expect(driver.machine.phase == .scheduled(at: at(602)))
        driver.check(answer: unauthorized, at: at(602))
        #expect(driver.machine.phase == .confirming(at: at(604), failures: 0))
    }

    @Test("a confirming request that meets an outage keeps the 401 pending and backs off; the next 401 confirms")
    func confirmationDuringOutage() {
        var driver = Driver.running()
        driver.check(answer: unauthorized, at: at(300))
        let failed = driver.check(answer: outage, at: at(302))
        #expect(failed.events == [.checkDegraded])
        #expect(driver.machine.phase == .confirming(at: at(302 + 15), failures: 1))
        let confirmed = driver.check(answer: unauthorized, at: at(317))
        #expect(confirmed.events == [.checkRecovered, .keyInvalidated])
        #expect(driver.machine.phase == .dead(reminderDue: at(317 + 3600)))
    }

    @Test("outage: backoff grows with full jitter up to backoff_max, CHECK_DEGRADED once then hourly, CHECK_RECOVERED once")
    func backoff() {
        var driver = Driver.running()
        var now = at(300)
        var waits: [Double] = []
        var degraded = 0
        for _ in 0..<30 {
            let effects = driver.check(answer: outage, at: now)
            degraded += effects.events.count { $0 == .checkDegraded }
            guard case .retrying(let next, _) = driver.machine.phase else {
                Issue.record("not retrying: \(driver.machine.phase)")
                return
            }
            waits.append(next.timeIntervalSince(now))
            now = next
        }
        #expect(Array(waits.prefix(5)) == [15, 22.5, 37.5, 67.5, 127.5], "min + (ceiling - min) · 0.5")
        #expect(waits.dropFirst(5).allSatisfy { $0 == 157.5 }, "the ceiling stops at backoff_max: 15 + (300 - 15) · 0.5")
        #expect(driver.machine.phase == .retrying(at: now, failures: 30))
        // 30 tries over about 1 h 10 min: CHECK_DEGRADED at the start, and once an hour later.
        #expect(degraded == 2)
        #expect(driver.machine.degradedSince == at(300))

        let recovered = driver.check(answer: valid, at: now)
        #expect(recovered.events == [.checkRecovered])
        #expect(driver.machine.degradedSince == nil)
        #expect(driver.machine.phase == .scheduled(at: now.addingTimeInterval(300)), "the backoff is reset")
    }

    @Test("429: Retry-After is honoured within backoff_min and backoff_max", arguments: [
        (Duration.seconds(7), 1.0, 7.0), (.seconds(7), 15, 15), (.seconds(3600), 1, 300), (nil, 15, 15),
    ])
    func retryAfter(_ retryAfter: Duration?, _ backoffMin: Double, _ wait: Double) {
        var check = defaults
        check.backoffMin = .seconds(backoffMin)
        var driver = Driver.running(check: check)
        driver.check(answer: rateLimited(retryAfter), at: at(300))
        #expect(driver.machine.phase == .retrying(at: at(300 + wait), failures: 1))
    }

    @Test("403: API_REQUEST_ERROR once per status and reminder interval, the normal interval between checks")
    func requestErrorOncePerInterval() {
        var driver = Driver.running()
        #expect(driver.check(answer: rejected(403), at: at(300)).events == [.apiRequestError])
        #expect(driver.check(answer: rejected(403), at: at(600)).events.isEmpty)
        #expect(driver.check(answer: rejected(404), at: at(900)).events == [.apiRequestError], "another status")
        #expect(driver.check(answer: rejected(404), at: at(1200)).events.isEmpty)
        #expect(driver.check(answer: rejected(404), at: at(900 + 3600)).events == [.apiRequestError], "an hour later")
        #expect(driver.machine.phase == .scheduled(at: at(900 + 3600 + 300)))
    }

    @Test("which key is checked when it is published", arguments: [
        // (started before, state, verified seconds ago, due in seconds from now; nil = dead)
        (false, KeyState.valid, 1.0 as Double?, 0.0 as Double?),  // the check at start is never skipped
        (true, .valid, 1, 299),  // activated verified: the schedule starts from the verification
        (true, .valid, 400, 0),  // verified longer ago than the interval
        (true, .unverified, nil, 0),
        (false, .invalid, nil, nil),  // known invalid: never checked, reminded at once
    ])
    func published(_ started: Bool, _ state: KeyState, _ verifiedAgo: Double?, _ dueIn: Double?) {
        var driver = Driver()
        if started { driver.handle(.keyPublished(nil), at: at(-10)) }
        let now = at(1000)
        let effects = driver.handle(
            .keyPublished(record(id: 7, state: state, verified: verifiedAgo.map { now.addingTimeInterval(-$0) })), at: now)
        #expect(effects == [.loadLastCheck(keyID: 7)])
        #expect(driver.machine.key?.key == nil, "the machine never holds the secret")
        if let dueIn {
            #expect(driver.machine.phase == .scheduled(at: now.addingTimeInterval(dueIn)))
        } else {
            #expect(driver.machine.phase == .dead(reminderDue: now))
            #expect(driver.round(at: now).events == [.keyStillInvalid])
        }
    }

    @Test("a new key starts afresh: its own confirmation and budget follow-up, but an outage of the API goes on")
    func newKeyResets() {
        var driver = Driver.running()
        driver.check(answer: outage, at: at(300))
        driver.check(answer: unauthorized, at: at(315))
        driver.check(answer: outage, at: at(317))
        #expect(driver.machine.phase == .confirming(at: at(317 + 22.5), failures: 2), "the 401 kept the outage's count")
        #expect(driver.machine.degradedSince == at(317), "the 401 was an answer: a new outage began at 317")
        driver.handle(.keyPublished(record(id: 2, state: .unverified)), at: at(320))
        #expect(driver.machine.phase == .scheduled(at: at(320)))
        #expect(driver.machine.lastCheck == nil)
        driver.handle(.lastCheckLoaded(nil, keyID: 2), at: at(320))
        let first = driver.check(answer: unauthorized, at: at(320))
        #expect(first.events == [.checkRecovered], "the API answers again; the new key's 401 waits for its own confirmation")
        #expect(driver.machine.phase == .confirming(at: at(322), failures: 0))
        driver.handle(.keyPublished(nil), at: at(321))
        #expect(driver.machine.phase == .noKey)
        #expect(driver.machine.nextWake == nil)
    }

    @Test("an answer for a key replaced while it was out is recorded and acted on by nobody")
    func staleAnswer() {
        var driver = Driver.running()
        let token = driver.nextToken()
        #expect(driver.handle(.due(token: token), at: at(300)) == [.send(keyID: 1, by: token)])
        driver.handle(.keyPublished(record(id: 2, state: .unverified)), at: at(300.5))
        let effects = driver.handle(.answered(unauthorized, keyID: 1), at: at(301))
        #expect(effects.records.map(\.1) == [false])
        #expect(effects.records.first?.0.keyID == 1)
        #expect(effects.reply(token) == .done(.checked(unauthorized)))
        #expect(driver.machine.phase == .scheduled(at: at(300.5)), "the new key is due at once")
        #expect(driver.machine.inFlight == nil)
    }

    @Test("an abandoned request (shutdown) changes nothing and leaves the check due")
    func abandoned() {
        var driver = Driver.running()
        let token = driver.nextToken()
        driver.handle(.due(token: token), at: at(300))
        let effects = driver.handle(.answered(nil, keyID: 1), at: at(301))
        #expect(effects == [.reply(token, .done(.noCheckableKey(.valid)))])
        #expect(driver.machine.phase == .scheduled(at: at(300)))
        #expect(driver.round(at: at(301)).sends == 1)
    }

    @Test("the on-demand budget: in flight → joined; within the interval → debounced and one follow-up at its end")
    func budget() {
        var driver = Driver.running()
        // A report: sent at once.
        let report = driver.nextToken()
        #expect(driver.handle(.requested(.consumerReport, token: report), at: at(1)) == [.send(keyID: 1, by: report)])
        // An admin check while it is out: joins it, no second request.
        let admin = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: admin), at: at(1.5)) == [])
        let answered = driver.handle(.answered(valid, keyID: 1), at: at(2))
        #expect(answered.reply(report) == .done(.checked(valid)))
        #expect(answered.reply(admin) == .done(.checked(valid)))

        // Within report_min_interval of the last on-demand request: the latest check,
        // and a follow-up at the interval's end, shared by everyone who asked.
        let late = driver.nextToken()
        let last = driver.machine.lastCheck
        #expect(driver.handle(.requested(.consumerReport, token: late), at: at(9)) == [.reply(late, .done(.debounced(last: last, retryIn: .seconds(2))))])
        let lateAdmin = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: lateAdmin), at: at(10)) == [.reply(lateAdmin, .done(.debounced(last: last, retryIn: .seconds(1))))])
        #expect(driver.machine.budget.followUpAt == at(11))
        #expect(driver.machine.nextWake == at(11))
        #expect(driver.round(at: at(10.5)).sends == 0)
        driver.check(answer: valid, at: at(11))
        #expect(driver.machine.budget.followUpAt == nil)
        #expect(driver.machine.budget.lastOnDemandAt == at(11), "the follow-up counts against the budget")
        #expect(driver.round(at: at(12)).sends == 0)
        let again = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: again), at: at(20)).reply(again) == .done(.debounced(last: driver.machine.lastCheck, retryIn: .seconds(1))))
        let fresh = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: fresh), at: at(21)) == [.send(keyID: 1, by: fresh)])
    }

    @Test("a newly activated key's check is not on-demand: never debounced")
    func activationIsNotBudgeted() {
        var driver = Driver.running()
        let report = driver.nextToken()
        driver.handle(.requested(.consumerReport, token: report), at: at(1))
        driver.handle(.answered(valid, keyID: 1), at: at(1))
        let activated = driver.nextToken()
        #expect(driver.handle(.requested(.keyActivated, token: activated), at: at(2)) == [.send(keyID: 1, by: activated)])
    }

    @Test("while a 401 waits for confirmation: a report is debounced, an admin check waits for the confirmation")
    func requestsDuringConfirmation() {
        var check = defaults
        check.reportMinInterval = .zero
        var driver = Driver.running(check: check)
        driver.check(answer: unauthorized, at: at(300))
        let report = driver.nextToken()
        #expect(driver.handle(.requested(.consumerReport, token: report), at: at(300.01)) == [.reply(report, .done(.debounced(last: driver.machine.lastCheck, retryIn: .zero)))])
        let admin = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: admin), at: at(300.02)) == [.reply(admin, .waitUntil(at(302)))])

        // The admin's time comes first: it sends the confirmation itself.
        #expect(driver.handle(.confirmationDue(token: admin), at: at(302)) == [.send(keyID: 1, by: admin)])
        #expect(driver.round(at: at(302)).sends == 0, "the scheduler joins it instead of confirming twice")
        let effects = driver.handle(.answered(valid, keyID: 1), at: at(302.1))
        #expect(effects.reply(admin) == .done(.checked(valid)))
        #expect(driver.machine.phase == .scheduled(at: at(602.1)))
    }

    @Test("an admin check that meets the first 401 is answered with the confirmation, whoever sends it")
    func adminGetsConfirmedOutcome() {
        var driver = Driver.running()
        let admin = driver.nextToken()
        #expect(driver.handle(.requested(.admin, token: admin), at: at(100)) == [.send(keyID: 1, by: admin)])
        let first = driver.handle(.answered(unauthorized, keyID: 1), at: at(100))
        #expect(first.reply(admin) == .waitUntil(at(102)))
        // The scheduler's round confirms first; the admin's later look finds it answered.
        let confirmed = driver.check(answer: unauthorized, at: at(102))
        #expect(confirmed.reply(admin) == .done(.checked(unauthorized)))
        #expect(driver.handle(.confirmationDue(token: admin), at: at(102)) == [])
        #expect(driver.machine.confirmationWaiters.isEmpty)
    }

    @Test("a report that meets the first 401 is answered with it at once")
    func reportGetsFirstAnswer() {
        var driver = Driver.running()
        let report = driver.nextToken()
        driver.handle(.requested(.consumerReport, token: report), at: at(100))
        #expect(driver.handle(.answered(unauthorized, keyID: 1), at: at(100)).reply(report) == .done(.checked(unauthorized)))
        #expect(driver.machine.confirmationWaiters.isEmpty)
    }

    @Test("reload: a check further out than the new interval is brought forward; a backoff or confirmation keeps its time")
    func reconfigure() {
        var shorter = defaults
        shorter.interval = .seconds(60)
        var driver = Driver.running()
        let effects = driver.handle(.reconfigured(shorter), at: at(10))
        #expect(driver.machine.phase == .scheduled(at: at(70)))
        #expect(effects.count == 1, "STATUS= is published again: \(effects)")

        var retrying = Driver.running()
        retrying.check(answer: outage, at: at(300))
        retrying.handle(.reconfigured(shorter), at: at(301))
        #expect(retrying.machine.phase == .retrying(at: at(315), failures: 1))

        var confirming = Driver.running()
        confirming.check(answer: unauthorized, at: at(300))
        confirming.handle(.reconfigured(shorter), at: at(301))
        #expect(confirming.machine.phase == .confirming(at: at(302), failures: 0))

        var longer = defaults
        longer.interval = .seconds(3600)
        var unchanged = Driver.running()
        unchanged.handle(.reconfigured(longer), at: at(10))
        #expect(unchanged.machine.phase == .scheduled(at: at(300)))
    }

    @Test("STATUS=: a change of kind at once, a new age at most every 15 s, the same text never twice")
    func status() {
        var driver = Driver.running(record(state: .unverified))
        // The start check's answer reached the store; the store published the key.
        driver.handle(.keyPublished(record(state: .valid, verified: t0)), at: t0)
        #expect(driver.handle(.refreshStatus, at: t0) == [.status("key fp1 valid, checked 0 s ago; key added 60 min ago")])
        #expect(driver.handle(.refreshStatus, at: t0) == [])
        #expect(driver.handle(.refreshStatus, at: at(14)) == [], "a new age, but within 15 s")
        #expect(driver.handle(.refreshStatus, at: at(16)) == [.status("key fp1 valid, checked 16 s ago; key added 60 min ago")])
        driver.check(answer: outage, at: at(300))
        #expect(driver.handle(.refreshStatus, at: at(300)) == [.status("key fp1 valid (verified 5 min ago); cannot reach the API for 0 s (HTTP 503); key added 65 min ago")])
        driver.handle(.keyPublished(nil), at: at(301))
        #expect(driver.handle(.refreshStatus, at: at(301)).first == .status("no key yet: drop one into /spool"))
    }
}
