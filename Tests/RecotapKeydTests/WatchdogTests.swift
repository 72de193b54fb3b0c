import Foundation
import Logging
import Synchronization
import Testing

@testable import RecotapKeyd

@Suite("Scheduler loop and watchdog (manual clock)")
struct WatchdogTests {
    /// A manual clock that counts the sleeps begun on it.
    private final class CountingClock: SchedulerClock {
        let base = ManualClock()
        private let count = Mutex(0)
        var sleeps: Int { count.withLock { $0 } }
        var now: Date { base.now }
        func sleep(for duration: Duration) async throws {
            count.withLock { $0 += 1 }
            try await base.sleep(for: duration)
        }
    }

    /// The daemon as the builder wires it, on a manual clock and a scripted API, with a
    /// watchdog of 10 s (pings at 5 s) unless `watchdog` is false.
    private func start(
        in dir: TemporaryDirectory, clock: any SchedulerClock, base: ManualClock, watchdog: Bool = true
    ) async throws -> (KeydDaemon, Task<Void, any Error>, ScriptedClient, Capture) {
        let config = try await ConfigurationLoader(
            filePath: try writeTestConfiguration(in: dir), fileRequired: true, environment: [:]
        ).load()
        let store = try KeyStore(path: config.store.path)
        try await store.addAndActivate(APIKey(secret: "rtk_watchdog_test_key_4455"), source: "test", state: .valid, at: Date())
        await store.close()
        let client = ScriptedClient(clock: clock)
        let capture = Capture()
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .info, sink: capture.journal) }
        let daemon = try await KeydDaemon.build(
            configuration: config, logger: logger, notifier: capture.notifier, client: client, clock: clock,
            watchdogInterval: watchdog ? .seconds(10) : nil, random: { 0.5 })
        let running = Task { try await daemon.run() }
        // Generous: on a loaded 2-core machine, with the real-binary suites running beside
        // it, the start has once taken longer than 10 s. What is measured here is the
        // schedule after it.
        #expect(await capture.waitForNotification("READY=1", timeout: .seconds(60)))
        #expect(await base.settle(sleepers: watchdog ? 3 : 2), "the loop, retention (and the watchdog) sleep on the clock")
        return (daemon, running, client, capture)
    }

    private func start(in dir: TemporaryDirectory) async throws -> (KeydDaemon, Task<Void, any Error>, ManualClock, ScriptedClient, Capture) {
        let clock = ManualClock()
        let (daemon, running, client, capture) = try await start(in: dir, clock: clock, base: clock)
        return (daemon, running, clock, client, capture)
    }

    @Test("idle, the loop sleeps until the next check: no round in between (no heartbeat)")
    func noHeartbeat() async throws {
        let dir = try TemporaryDirectory()
        let clock = CountingClock()
        let (daemon, running, client, _) = try await start(in: dir, clock: clock, base: clock.base, watchdog: false)
        #expect(client.calls.count == 1)
        let sleeps = clock.sleeps
        await clock.base.run(for: .seconds(600), step: .seconds(1), sleepers: 2)
        #expect(client.calls.count == 3, "a check every 5 min")
        #expect(clock.sleeps - sleeps == 2, "one sleep per check, not one per second")
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
    }

    @Test("a key activated while the loop sleeps is checked at once: the loop follows the store's published key")
    func followsPublishedKey() async throws {
        let dir = try TemporaryDirectory()
        let clock = ManualClock()
        let (daemon, running, client, _) = try await start(in: dir, clock: clock, base: clock, watchdog: false)
        #expect(client.calls.count == 1)
        let replacement = APIKey(secret: "rtk_watchdog_replacement_6677")
        try await daemon.store.addAndActivate(replacement, source: "new.key", state: .unverified, at: clock.now)
        #expect(try await eventually { client.calls.count == 2 }, "without the clock moving")
        #expect(client.calls.last?.fingerprint == replacement.fingerprint)
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
    }

    @Test("a probe is answered by the loop's next round; one left unanswered past the window means stuck")
    func probes() {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let progress = ProgressMonitor(start: start, wakeups: Wakeup())
        #expect(progress.isAlive(at: start.addingTimeInterval(100), window: .seconds(15)), "nothing asked yet")
        let round = progress.roundStarted()
        progress.probe(at: start)
        progress.roundEnded(through: round, at: start.addingTimeInterval(1))
        #expect(!progress.isAlive(at: start.addingTimeInterval(16), window: .seconds(15)), "a round that began before the probe does not answer it")
        #expect(progress.isAlive(at: start.addingTimeInterval(15), window: .seconds(15)))
        progress.probe(at: start.addingTimeInterval(5))  // one outstanding at a time: measured from the first
        #expect(!progress.isAlive(at: start.addingTimeInterval(16), window: .seconds(15)))
        progress.roundEnded(through: progress.roundStarted(), at: start.addingTimeInterval(17))
        #expect(progress.isAlive(at: start.addingTimeInterval(100), window: .seconds(15)))
        #expect(progress.lastRoundAt == start.addingTimeInterval(17))
    }

    private func pings(_ capture: Capture) -> Int {
        capture.notifications.filter { $0 == "WATCHDOG=1" }.count
    }

    @Test("the loop checks at start and on schedule, and the watchdog pings at half the interval while it turns")
    func pingsWhileHealthy() async throws {
        let dir = try TemporaryDirectory()
        let (daemon, running, clock, client, capture) = try await start(in: dir)
        #expect(client.calls.count == 1, "a check at start, once ready")
        let before = pings(capture)
        await clock.run(for: .seconds(600), step: .seconds(1), sleepers: 3)
        #expect(pings(capture) - before == 120, "one ping per 5 s for 10 min")
        #expect(client.calls.count == 3, "and a check every 5 min")
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
    }

    @Test("a stalled scheduler stops the pings")
    func stalledSchedulerStopsPings() async throws {
        let dir = try TemporaryDirectory()
        let (daemon, running, clock, client, capture) = try await start(in: dir)
        await clock.run(for: .seconds(60), step: .seconds(1), sleepers: 3)
        #expect(pings(capture) >= 12)

        // The next check never returns: the loop is stuck inside it.
        client.hang()
        await clock.run(for: .seconds(239), step: .seconds(1), sleepers: 3)
        #expect(client.calls.count == 1)
        let stuckAt = clock.now
        clock.advance(by: .seconds(1))  // 300 s: the next check is due
        #expect(await clock.settle(sleepers: 2), "only the watchdog (and retention) still sleep")
        #expect(client.calls.count == 2)
        let pingsWhenStuck = pings(capture)

        // The window is api.timeout (10 s) + 5 s from the probe the loop left unanswered: a few more pings
        // at most, then none, for as long as the loop stays stuck.
        await clock.run(for: .seconds(120), step: .seconds(1), sleepers: 2)
        let late = pings(capture) - pingsWhenStuck
        #expect(late <= 4, "\(late) pings after the loop stalled at \(stuckAt)")
        let silentFrom = pings(capture)
        await clock.run(for: .seconds(300), step: .seconds(1), sleepers: 2)
        #expect(pings(capture) == silentFrom, "no ping for a stuck loop")
        #expect(capture.journalEntries.contains { entry in
            entry.contains { $0.name == "MESSAGE" && $0.value.contains("withholding WATCHDOG=1") }
        })

        // Shutdown cancels the stuck check.
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
        #expect(capture.notifications.last?.hasPrefix("STOPPING=1") == true)
    }
}
