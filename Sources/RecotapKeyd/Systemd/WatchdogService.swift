import CSystemd
import Foundation
import Logging
import ServiceLifecycle

/// Feeds systemd's watchdog (`WatchdogSec=`) — but only while the daemon is making
/// progress: the scheduler's loop came round within its window and the store answers
/// a trivial query. A hung loop or store therefore stops the pings and systemd
/// restarts the daemon. There is deliberately no free-running timer here that would
/// keep pinging for a daemon that no longer works.
public struct WatchdogService: Service, CustomStringConvertible {
    /// `WatchdogSec=`; pings go out at half of it.
    let interval: Duration
    /// How long the scheduler's loop may go without a beat: its heartbeat plus the
    /// longest a single check may take (`api.timeout`), plus slack.
    let window: Duration
    let clock: any SchedulerClock
    let notifier: SystemdNotifier
    let progress: ProgressMonitor
    let store: KeyStore
    let readiness: Readiness
    let logger: Logger

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
            while !Task.isCancelled {
                let now = clock.now
                let loopAlive = progress.isAlive(at: now, window: window)
                let storeAnswers = await storeAnswers()
                if loopAlive && storeAnswers {
                    notifier.notify("WATCHDOG=1")
                    if withholding { logger.notice("watchdog: progress again, pings resumed") }
                    withholding = false
                } else if !withholding {
                    withholding = true
                    let last = progress.lastBeatAt.map { "last beat \($0.formatted(.iso8601))" } ?? "no beat yet"
                    logger.critical(
                        "watchdog: withholding WATCHDOG=1 — \(loopAlive ? "the store does not answer" : "the scheduler's loop is stuck (\(last))"); systemd will restart the daemon")
                }
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
