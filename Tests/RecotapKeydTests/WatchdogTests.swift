import Foundation
import Logging
import Testing

@testable import RecotapKeyd

@Suite("Scheduler loop and watchdog (manual clock)")
struct WatchdogTests {
    /// The daemon as the builder wires it, on a manual clock and a scripted API, with a
    /// watchdog of 10 s (pings at 5 s).
    private func start(in dir: TemporaryDirectory) async throws -> (KeydDaemon, Task<Void, any Error>, ManualClock, ScriptedClient, Capture) {
        let config = try await ConfigurationLoader(
            filePath: try writeTestConfiguration(in: dir), fileRequired: true, environment: [:]
        ).load()
        let store = try KeyStore(path: config.store.path)
        try await store.addAndActivate(APIKey(secret: "rtk_watchdog_test_key_4455"), source: "test", state: .valid, at: Date())
        await store.close()
        let clock = ManualClock()
        let client = ScriptedClient(clock: clock)
        let capture = Capture()
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .info, sink: capture.journal) }
        let daemon = try await KeydDaemon.build(
            configuration: config, logger: logger, notifier: capture.notifier, client: client, clock: clock,
            watchdogInterval: .seconds(10), random: { 0.5 })
        let running = Task { try await daemon.run() }
        #expect(await capture.waitForNotification("READY=1"))
        #expect(await clock.settle(sleepers: 2), "the loop and the watchdog sleep on the clock")
        return (daemon, running, clock, client, capture)
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
        await clock.run(for: .seconds(600), step: .seconds(1), sleepers: 2)
        #expect(pings(capture) - before == 120, "one ping per 5 s for 10 min")
        #expect(client.calls.count == 3, "and a check every 5 min")
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
    }

    @Test("a stalled scheduler stops the pings")
    func stalledSchedulerStopsPings() async throws {
        let dir = try TemporaryDirectory()
        let (daemon, running, clock, client, capture) = try await start(in: dir)
        await clock.run(for: .seconds(60), step: .seconds(1), sleepers: 2)
        #expect(pings(capture) >= 12)

        // The next check never returns: the loop is stuck inside it.
        client.hang()
        await clock.run(for: .seconds(239), step: .seconds(1), sleepers: 2)
        #expect(client.calls.count == 1)
        let stuckAt = clock.now
        clock.advance(by: .seconds(1))  // 300 s: the next check is due
        #expect(await clock.settle(sleepers: 1), "only the watchdog still sleeps")
        #expect(client.calls.count == 2)
        let pingsWhenStuck = pings(capture)

        // The window is heartbeat (1 s) + api.timeout (10 s) + 5 s: a few more pings
        // at most, then none, for as long as the loop stays stuck.
        await clock.run(for: .seconds(120), step: .seconds(1), sleepers: 1)
        let late = pings(capture) - pingsWhenStuck
        #expect(late <= 4, "\(late) pings after the loop stalled at \(stuckAt)")
        let silentFrom = pings(capture)
        await clock.run(for: .seconds(300), step: .seconds(1), sleepers: 1)
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
