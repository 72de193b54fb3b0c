import CSystemd
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Feeds systemd's watchdog (`WatchdogSec=`) — but only while the daemon is making
/// progress: the scheduler's loop ran a round for the probe sent to it (``ProgressMonitor``)
/// within its window, the store answers a trivial query, and every SwiftNIO event loop (which serve the sockets) ran the
/// probe sent the round before (``EventLoopProbe``). A hung loop, store or event loop therefore stops
/// the pings and systemd restarts the daemon. There is deliberately no free-running
/// timer here that would keep pinging for a daemon that no longer works.
public struct WatchdogService: Service, CustomStringConvertible {
    /// `WatchdogSec=`; pings go out at half of it.
    let interval: Duration
    /// How long the scheduler's loop may take to answer a probe: the longest a single
    /// check may take (`api.timeout`), plus slack.
    let window: Duration
    let clock: any SchedulerClock
    let notifier: SystemdNotifier
    let progress: ProgressMonitor
    let store: KeyStore
    /// Probes the event loops serving the sockets.
    let eventLoops: EventLoopProbe
    let readiness: Readiness
    let logger: Logger
    /// Test seam for the system tests (`KEYD_TEST_STALL_LOOP_FILE`): while this file
    /// holds the daemon's pid, one event loop is kept busy — as a blocking call on it
    /// would — so that the watchdog's reaction can be seen under a real systemd.
    var stallLoopFile: String? = nil

    /// How long past the next round an event loop may take to run its probe.
    static let loopGrace: Duration = .seconds(1)

    public var description: String { "WatchdogService" }

    /// The interval systemd asked for in `WATCHDOG_USEC` (for this process), if any.
    public static func intervalFromEnvironment() -> Duration? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return .microseconds(Saturating.int64(microseconds))
    }

    public func run() async throws {
        try await runUntilGracefulShutdown(after: readiness) {
            var withholding = false
            var stalling = false
            while !Task.isCancelled {
                if let stallLoopFile, !stalling, CheckSchedulerService.holdsOwnPID(stallLoopFile), let loop = eventLoops.loops.first {
                    stalling = true
                    logger.warning("test seam: stalling an event loop while \(stallLoopFile) holds this pid")
                    loop.execute {
                        while CheckSchedulerService.holdsOwnPID(stallLoopFile) { usleep(100_000) }
                    }
                }
                let now = clock.now
                let loopAlive = progress.isAlive(at: now, window: window)
                let storeAnswers = await storeAnswers()
                let stuckLoops = await eventLoops.stuckLoops(grace: Self.loopGrace)
                if stuckLoops == 0 { stalling = false }
                if loopAlive && storeAnswers && stuckLoops == 0 {
                    notifier.notify("WATCHDOG=1")
                    if withholding { logger.notice("watchdog: progress again, pings resumed") }
                    withholding = false
                } else if !withholding {
                    withholding = true
                    let last = progress.lastRoundAt.map { "last round \($0.formatted(.iso8601))" } ?? "no round yet"
                    let why = !loopAlive ? "the scheduler's loop is stuck: a probe went unanswered for more than \(DurationParsing.format(window)) (\(last))"
                        : !storeAnswers ? "the store does not answer"
                        : "\(stuckLoops) event loop(s) serving the sockets did not run a probe sent \(DurationParsing.format(interval / 2)) ago"
                    logger.critical("watchdog: withholding WATCHDOG=1 — \(why); systemd will restart the daemon")
                }
                // The next round's question to the scheduler's loop.
                progress.probe(at: clock.now)
                try await clock.sleep(for: interval / 2)
            }
        }
    }

    private func storeAnswers() async -> Bool {
        do {
            try await store.ping()
            return true
        } catch {
            return false
        }
    }
}

/// An empty task sent to every event loop each watchdog round; a loop that has not
/// run the previous round's by the next (plus a short grace) is stuck — blocked in a
/// call that should never run on it. No timer is involved, so a busy thread pool
/// elsewhere cannot make a healthy loop look stuck.
public final class EventLoopProbe: Sendable {
    let loops: [any EventLoop]
    private let answered: Mutex<[Bool]>

    public init(loops: [any EventLoop]) {
        self.loops = loops
        answered = Mutex(Array(repeating: true, count: loops.count))
    }

    /// How many loops have not run the probe sent last time (waiting up to `grace`
    /// for them); then sends the next probe.
    public func stuckLoops(grace: Duration) async -> Int {
        let deadline = ContinuousClock.now + grace
        var stuck = answered.withLock { $0.count { !$0 } }
        while stuck > 0, ContinuousClock.now < deadline {
            try? await SystemSchedulerClock.sleep(for: .milliseconds(10))
            stuck = answered.withLock { $0.count { !$0 } }
        }
        answered.withLock { $0 = Array(repeating: false, count: loops.count) }
        for (index, loop) in loops.enumerated() {
            loop.execute { self.answered.withLock { $0[index] = true } }
        }
        return stuck
    }
}
