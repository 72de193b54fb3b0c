import Foundation
import Logging
import Synchronization
import Testing

@testable import RecotapKeyd

/// The checker with a scripted API, a manual clock, a real store and captured journal.
private struct Harness {
    let dir: TemporaryDirectory
    let store: KeyStore
    let clock = ManualClock()
    let client: ScriptedClient
    let capture = Capture()
    let checker: KeyChecker
    let key = APIKey(secret: "rtk_checker_test_key_00112233")
    var check: KeydConfiguration.Check

    init(check configure: (inout KeydConfiguration.Check) -> Void = { _ in }, state: KeyState? = .unverified) async throws {
        dir = try TemporaryDirectory()
        store = try KeyStore(path: dir.file("keyd.sqlite3"))
        client = ScriptedClient(clock: clock)
        var check = KeydConfiguration.defaults.check
        check.jitter = 0
        configure(&check)
        self.check = check
        if let state {
            let id = try await store.addAndActivate(key, source: "test", state: state == .invalid ? .valid : state, at: clock.now).activated.id
            if state == .invalid {
                try await store.record(check: CheckRecord(keyID: id, at: clock.now, outcome: .invalid, httpStatus: 401, latencyMilliseconds: 9, reason: "Invalid API key"))
            }
        }
        let capture = self.capture
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .debug, sink: capture.journal) }
        checker = KeyChecker(
            store: store, client: client, clock: clock, timing: CheckTiming(check: check, random: { 0.5 }),
            spoolDirectory: "/var/spool/recotap-keyd", logger: logger,
            notifier: capture.notifier)
    }

    /// Journal entries with this event's MESSAGE_ID, as field dictionaries.
    func events(_ event: KeydEvent) -> [[String: String]] { capture.events(event) }

    /// Ticks, advances the clock to the returned wake time (at most `limit`), repeats
    /// until `total` has passed.
    func run(for total: Duration) async {
        let end = clock.now.adding(total)
        while clock.now < end {
            let next = await checker.tick() ?? end
            let step = min(max(next.since(clock.now), .milliseconds(1)), end.since(clock.now))
            if step <= .zero { break }
            clock.advance(by: step)
        }
        await checker.tick()
    }

    var storedKey: KeyRecord? { get async throws { try await store.activeKey() } }
    var lastStatus: String? { capture.notifications.last }
}

@Suite("Key checker (scripted API, manual clock)")
struct KeyCheckerTests {
    @Test("10,000 reports while the API hangs cost one waiting task and one request; the task ends once the API answers")
    func reportFloodIsCoalesced() async throws {
        let h = try await Harness()
        await h.checker.tick()
        #expect(h.client.calls.count == 1)
        h.clock.advance(by: .seconds(60))
        h.client.hold()
        let work = RequestWork()
        let runner = Task { await work.run() }
        let reports = ReportChecks()
        var outcomes: [ReportChecks.Outcome: Int] = [:]
        for _ in 0..<10_000 { outcomes[reports.request(h.checker, on: work), default: 0] += 1 }
        #expect(outcomes == [.started: 1, .coalesced: 9_999])
        #expect(try await eventually { h.client.calls.count == 2 }, "the first report's check reaches the API")
        h.client.release()
        // The follow-up for the 9,999 is within report_min_interval: answered by the
        // latest check, and the task ends; a new report starts a new one.
        #expect(try await eventually { !reports.isRunning })
        #expect(h.client.calls.count == 2)
        #expect(reports.request(h.checker, on: work) == .started)
        work.finish()
        await runner.value
        #expect(reports.request(h.checker, on: work) == .refused)
    }

    @Test("a valid key is checked at start and then every interval, and STATUS says so")
    func validSchedule() async throws {
        let h = try await Harness()
        await h.checker.tick()
        #expect(h.client.calls.count == 1)
        #expect(try await h.storedKey?.state == .valid)
        #expect(h.lastStatus == "STATUS=key \(h.key.fingerprint) valid, checked 0 s ago; key added 0 s ago")

        h.clock.advance(by: .seconds(299))
        await h.checker.tick()
        #expect(h.client.calls.count == 1, "not before the interval")
        h.clock.advance(by: .seconds(1))
        await h.checker.tick()
        #expect(h.client.calls.count == 2)

        await h.run(for: .seconds(24 * 3600))
        #expect(h.client.calls.count == 2 + 288, "one check per 5 min: 288 a day")
        #expect(try await h.store.checks(keyID: try #require(try await h.storedKey).id, limit: 1000).count == 290)
        #expect(h.events(.checkDegraded).isEmpty)
    }

    @Test("a regenerated key is declared invalid only after the confirming request")
    func invalidAfterConfirmation() async throws {
        let h = try await Harness(state: .valid)
        h.client.script([ScriptedClient.valid, ScriptedClient.invalid, ScriptedClient.invalid])
        await h.checker.tick()
        h.clock.advance(by: .seconds(300))
        await h.checker.tick()
        #expect(h.client.calls.count == 2)
        #expect(h.events(.keyInvalidated).isEmpty, "one 401 is not enough")
        #expect(try await h.storedKey?.state == .valid)

        h.clock.advance(by: .seconds(1))
        await h.checker.tick()
        #expect(h.client.calls.count == 2, "the confirmation waits confirm_delay")
        h.clock.advance(by: .seconds(1))
        await h.checker.tick()
        #expect(h.client.calls.count == 3)
        let stored = try #require(try await h.storedKey)
        #expect(stored.state == .invalid)
        #expect(stored.invalidSince == h.clock.now)

        let invalidated = try #require(h.events(.keyInvalidated).first)
        #expect(h.events(.keyInvalidated).count == 1)
        #expect(invalidated["PRIORITY"] == "2")
        #expect(invalidated["RECOTAP_KEY_FINGERPRINT"] == h.key.fingerprint)
        #expect(invalidated["RECOTAP_HTTP_STATUS"] == "401")
        #expect(invalidated["RECOTAP_REASON"] == "Invalid API key")
        #expect(invalidated["RECOTAP_CHECK_OUTCOME"] == "invalid")
        #expect(invalidated["RECOTAP_KEY_VALID_FOR"] == "302", "active from t0 to t0+302 s")
        #expect(invalidated["RECOTAP_KEY_VERSION"] == String(stored.id))
        #expect(invalidated["MESSAGE"]?.contains("Settings → Workspace → Tech Settings → API Access Key") == true)
        #expect(h.lastStatus?.hasPrefix("STATUS=key \(h.key.fingerprint) INVALID since ") == true)
        #expect(!h.capture.everything.contains(h.key.revealSecret()))

        // A confirmed-invalid key is never checked again; the journal is reminded hourly.
        await h.run(for: .seconds(3 * 3600 + 10))
        #expect(h.client.calls.count == 3)
        let reminders = h.events(.keyStillInvalid)
        #expect(reminders.count == 3)
        #expect(reminders.first?["PRIORITY"] == "3")
        #expect(reminders.first?["RECOTAP_KEY_FINGERPRINT"] == h.key.fingerprint)
    }

    @Test("a single flaky 401 followed by 200 does not invalidate")
    func flaky401() async throws {
        let h = try await Harness(state: .valid)
        h.client.script([ScriptedClient.invalid, ScriptedClient.valid])
        await h.run(for: .seconds(60))
        #expect(h.client.calls.count == 2)
        #expect(h.events(.keyInvalidated).isEmpty)
        #expect(try await h.storedKey?.state == .valid)
        // The first 401 is on record, marked as unconfirmed.
        let checks = try await h.store.checks(keyID: try #require(try await h.storedKey).id)
        #expect(checks.map(\.outcome) == [.valid, .invalid])
        #expect(checks.last?.reason == "Invalid API key (to be confirmed)")

        // A later single 401 again needs its own confirmation.
        h.client.script([ScriptedClient.invalid, ScriptedClient.valid])
        await h.run(for: .seconds(600))
        #expect(h.events(.keyInvalidated).isEmpty)
    }

    @Test("a 401 without customMessage still invalidates, with the message as the reason")
    func bare401() async throws {
        let h = try await Harness(state: .valid)
        let bare = CheckResult(outcome: .invalid, httpStatus: 401, reason: "Unauthorized access", latency: .milliseconds(5))
        h.client.script([bare, bare])
        await h.run(for: .seconds(10))
        #expect(h.events(.keyInvalidated).first?["RECOTAP_REASON"] == "Unauthorized access")
    }

    @Test("an outage of any length never invalidates: one CHECK_DEGRADED, reminders at most hourly, one CHECK_RECOVERED")
    func outage() async throws {
        let h = try await Harness(state: .valid)
        h.client.script([], then: ScriptedClient.unreachable())
        await h.run(for: .seconds(50 * 60))
        let attempts = h.client.calls.count
        #expect(attempts > 10, "retried with backoff: \(attempts)")
        #expect(h.events(.checkDegraded).count == 1)
        #expect(h.events(.checkDegraded).first?["PRIORITY"] == "4")
        #expect(h.events(.checkDegraded).first?["RECOTAP_HTTP_STATUS"] == "503")
        #expect(h.lastStatus?.contains("cannot reach the API for") == true)

        // Backoff: exponential, capped at backoff_max (5 min).
        let gaps = zip(h.client.calls.dropFirst(), h.client.calls).map { $0.at.since($1.at) }
        #expect(gaps.allSatisfy { $0 <= .seconds(300) })
        #expect(gaps.prefix(3).map { Int($0.seconds) } == [15, 22, 37], "min + (ceiling - min) · 0.5")

        // Timeouts and dropped connections the same, for a whole day.
        h.client.script([], then: CheckResult(outcome: .unreachable, reason: "timeout after 10s", latency: .seconds(10)))
        await h.run(for: .seconds(24 * 3600))
        #expect(h.events(.keyInvalidated).isEmpty)
        #expect(try await h.storedKey?.state == .valid)
        let degraded = h.events(.checkDegraded)
        #expect(degraded.count >= 24 && degraded.count <= 26, "\(degraded.count)")

        h.client.script([], then: ScriptedClient.valid)
        await h.run(for: .seconds(600))
        #expect(h.events(.checkRecovered).count == 1)
        #expect(h.events(.checkRecovered).first?["PRIORITY"] == "5")
        #expect(h.lastStatus?.contains("valid, checked") == true)
    }

    @Test("429 with Retry-After 7: no request before 7 s")
    func retryAfter() async throws {
        let h = try await Harness(check: { $0.backoffMin = .seconds(1) }, state: .valid)
        h.client.script([
            CheckResult(outcome: .rateLimited, httpStatus: 429, reason: "HTTP 429 Too Many Requests", latency: .milliseconds(5), retryAfter: .seconds(7)),
            ScriptedClient.valid,
        ])
        await h.checker.tick()
        #expect(h.client.calls.count == 1)
        for _ in 0..<69 {
            h.clock.advance(by: .milliseconds(100))
            await h.checker.tick()
        }
        #expect(h.client.calls.count == 1, "6.9 s: still waiting")
        h.clock.advance(by: .milliseconds(100))
        await h.checker.tick()
        #expect(h.client.calls.count == 2)
        #expect(h.client.calls[1].at.since(h.client.calls[0].at) == .seconds(7))
        #expect(h.events(.checkDegraded).count == 1)
        #expect(h.events(.checkRecovered).count == 1)
    }

    @Test("a Retry-After longer than backoff_max is capped; without one, the ordinary backoff")
    func retryAfterCap() async throws {
        let h = try await Harness(state: .valid)
        h.client.script([
            CheckResult(outcome: .rateLimited, httpStatus: 429, latency: .zero, retryAfter: .seconds(300)),
            CheckResult(outcome: .rateLimited, httpStatus: 429, latency: .zero, retryAfter: nil),
            ScriptedClient.valid,
        ])
        await h.run(for: .seconds(1000))
        let calls = h.client.calls
        #expect(calls[1].at.since(calls[0].at) == .seconds(300))
        #expect(calls[2].at.since(calls[1].at) == .milliseconds(22_500), "second failure: 15 s + (30 s - 15 s) · 0.5")
    }

    @Test("403 and 404: API_REQUEST_ERROR with a hint, logged once, and the key's state unchanged", arguments: [
        (403, "API access is probably not enabled for the workspace"), (404, "check api.base_url"),
    ])
    func requestErrors(_ status: Int, _ hint: String) async throws {
        let h = try await Harness(state: .unverified)
        h.client.script([], then: CheckResult(outcome: .rejectedRequest, httpStatus: status, reason: "HTTP \(status)", latency: .zero))
        await h.run(for: .seconds(30 * 60))
        #expect(h.client.calls.count == 7, "at the normal interval, not in a tight loop")
        let errors = h.events(.apiRequestError)
        #expect(errors.count == 1)
        #expect(errors.first?["PRIORITY"] == "3")
        #expect(errors.first?["RECOTAP_HTTP_STATUS"] == String(status))
        #expect(errors.first?["RECOTAP_HINT"]?.contains(hint) == true)
        #expect(errors.first?["MESSAGE"]?.contains(hint) == true)
        #expect(try await h.storedKey?.state == .unverified)
        #expect(h.events(.checkDegraded).isEmpty)
    }

    @Test("restarted with a key already known invalid: no request, a reminder at start")
    func restartWithInvalidKey() async throws {
        let h = try await Harness(state: .invalid)
        await h.run(for: .seconds(2 * 3600 + 1))
        #expect(h.client.calls.isEmpty)
        #expect(h.events(.keyStillInvalid).count == 3, "at start, after 1 h, after 2 h")
        #expect(await h.checker.checkNow(reason: .admin) == .noCheckableKey(.invalid))
        #expect(h.client.calls.isEmpty)
    }

    @Test("consumer reports and admin checks share one budget: one on-demand check per report_min_interval")
    func debounce() async throws {
        let h = try await Harness(state: .valid)
        await h.checker.tick()
        #expect(h.client.calls.count == 1)
        guard case .checked(let result) = await h.checker.checkNow(reason: .consumerReport) else {
            Issue.record("expected a check")
            return
        }
        #expect(result.outcome == .valid)
        h.clock.advance(by: .seconds(9))
        guard case .debounced(let last, let retryIn) = await h.checker.checkNow(reason: .consumerReport) else {
            Issue.record("expected the report to be debounced")
            return
        }
        #expect(last?.outcome == .valid)
        #expect(retryIn == .seconds(1))
        guard case .debounced = await h.checker.checkNow(reason: .admin) else {
            Issue.record("an admin check within the interval is debounced too")
            return
        }
        #expect(h.client.calls.count == 2)
        // What was asked within the interval is not lost: one follow-up check at its end.
        #expect(await h.checker.tick() == h.clock.now.adding(.seconds(1)))
        h.clock.advance(by: .seconds(1))
        await h.checker.tick()
        #expect(h.client.calls.count == 3, "the follow-up, shared by the report and the admin check")
        await h.checker.tick()
        #expect(h.client.calls.count == 3)
        guard case .debounced = await h.checker.checkNow(reason: .admin) else {
            Issue.record("the follow-up counts against the budget too")
            return
        }
        h.clock.advance(by: .seconds(10))
        #expect(await h.checker.checkNow(reason: .admin) == .checked(ScriptedClient.valid))
        #expect(h.client.calls.count == 4)
    }

    @Test("a 401 is confirmed only after confirm_delay: a report and an admin check moments later wait, and a 200 then keeps the key")
    func noEarlyConfirmation() async throws {
        let h = try await Harness(check: { $0.reportMinInterval = .zero }, state: .valid)
        h.client.script([ScriptedClient.invalid, ScriptedClient.valid])
        await h.checker.tick()
        #expect(h.client.calls.count == 1, "the first 401")

        h.clock.advance(by: .milliseconds(10))
        guard case .debounced = await h.checker.checkNow(reason: .consumerReport) else {
            Issue.record("a report during the confirmation window sends nothing")
            return
        }
        h.clock.advance(by: .milliseconds(10))
        let checker = h.checker
        let admin = Task { await checker.checkNow(reason: .admin) }
        #expect(await h.clock.settle(sleepers: 1), "the admin check waits on the clock for the confirmation")
        #expect(h.client.calls.count == 1, "no second request before confirm_delay")

        h.clock.advance(by: .milliseconds(1970))
        #expect(await h.clock.settle(sleepers: 1))
        #expect(h.client.calls.count == 1, "still 10 ms short of confirm_delay")
        h.clock.advance(by: .milliseconds(10))
        #expect(await admin.value == .checked(ScriptedClient.valid), "the admin check answers the confirmation")
        #expect(h.client.calls.count == 2)
        #expect(h.client.calls[1].at.since(h.client.calls[0].at) >= h.check.confirmDelay)
        await h.checker.tick()
        #expect(h.client.calls.count == 2, "the scheduler does not confirm a second time")
        #expect(try await h.storedKey?.state == .valid)
        #expect(h.events(.keyInvalidated).isEmpty)
    }

    @Test("an admin check that meets the first 401 answers the confirmed outcome")
    func adminWaitsForConfirmation() async throws {
        let h = try await Harness(state: .valid)
        h.client.script([ScriptedClient.invalid, ScriptedClient.invalid])
        let checker = h.checker
        let admin = Task { await checker.checkNow(reason: .admin) }
        #expect(await h.clock.settle(sleepers: 1))
        #expect(h.client.calls.count == 1)
        h.clock.advance(by: h.check.confirmDelay)
        #expect(await admin.value == .checked(ScriptedClient.invalid))
        #expect(h.client.calls.count == 2)
        #expect(try await h.storedKey?.state == .invalid)
        #expect(h.events(.keyInvalidated).count == 1)
    }

    @Test("the call budget holds: 1,000 reports and 1,000 admin checks in 10 s cost at most one request per report_min_interval")
    func callBudget() async throws {
        let h = try await Harness(state: .valid)
        await h.checker.tick()
        #expect(h.client.calls.count == 1, "the check at start")
        for _ in 0..<1000 {
            _ = await h.checker.checkNow(reason: .consumerReport)
            _ = await h.checker.checkNow(reason: .admin)
            h.clock.advance(by: .milliseconds(10))
        }
        await h.checker.tick()
        let onDemand = h.client.calls.count - 1
        // 10 s of requests, report_min_interval 10 s: the first, and the follow-up at
        // the window's end.
        #expect(onDemand >= 1 && onDemand <= 2, "\(onDemand) on-demand requests")
    }

    @Test("a newly activated key is checked at once and its history starts afresh")
    func newKey() async throws {
        let h = try await Harness(state: .valid)
        h.client.script([ScriptedClient.valid, ScriptedClient.invalid, ScriptedClient.invalid])
        await h.run(for: .seconds(400))
        #expect(try await h.storedKey?.state == .invalid)
        let replacement = APIKey(secret: "rtk_replacement_key_99887766")
        try await h.store.addAndActivate(replacement, source: "new.key", state: .unverified, at: h.clock.now)
        #expect(await h.checker.checkNow(reason: .keyActivated) == .checked(ScriptedClient.valid))
        #expect(h.client.calls.last?.fingerprint == replacement.fingerprint)
        #expect(try await h.storedKey?.state == .valid)
        #expect(h.capture.journalEntries.contains { $0.contains(JournalField("MESSAGE", "key \(replacement.fingerprint) verified: the API accepts it")) })
    }

    @Test("with no key, nothing is checked and STATUS says what to do")
    func noKey() async throws {
        let h = try await Harness(state: nil)
        #expect(await h.checker.tick() == nil)
        #expect(h.client.calls.isEmpty)
        #expect(h.capture.notifications == ["STATUS=no key yet: drop one into /var/spool/recotap-keyd"])
        #expect(await h.checker.checkNow(reason: .admin) == .noCheckableKey(nil))
    }
}

@Suite("Check timing")
struct CheckTimingTests {
    var check: KeydConfiguration.Check { KeydConfiguration.defaults.check }

    @Test("the interval is spread by ±jitter")
    func jitter() {
        #expect(CheckTiming(check: check, random: { 0 }).nextInterval() == .seconds(270))
        #expect(CheckTiming(check: check, random: { 0.5 }).nextInterval() == .seconds(300))
        #expect(CheckTiming(check: check, random: { 0.999999 }).nextInterval() <= .seconds(330))
    }

    @Test("backoff grows exponentially between backoff_min and backoff_max, with full jitter")
    func backoff() {
        let top = CheckTiming(check: check, random: { 0.999999 })
        #expect((1...8).map { Int(top.backoff(failures: $0).seconds.rounded()) } == [15, 30, 60, 120, 240, 300, 300, 300])
        let bottom = CheckTiming(check: check, random: { 0 })
        #expect((1...8).allSatisfy { bottom.backoff(failures: $0) == .seconds(15) })
        #expect(top.backoff(failures: 10_000) == .seconds(300))
    }

    @Test("after a 429 the API's wait is honoured within backoff_min and backoff_max")
    func rateLimit() {
        let timing = CheckTiming(check: check, random: { 0 })
        #expect(timing.afterRateLimit(retryAfter: .seconds(60), failures: 1) == .seconds(60))
        #expect(timing.afterRateLimit(retryAfter: .seconds(1), failures: 1) == .seconds(15))
        #expect(timing.afterRateLimit(retryAfter: .seconds(3600), failures: 1) == .seconds(300))
        #expect(timing.afterRateLimit(retryAfter: nil, failures: 1) == .seconds(15))
    }
}
