import Foundation
import Logging
import ServiceLifecycle

/// The scheduler's loop: once the daemon is ready, it asks the ``KeyChecker`` to do
/// what is due, then sleeps on the injected clock until the next thing is due — or
/// until something happens: the store publishes a key (``CurrentKey/changes()``), a
/// request moves the schedule, or the watchdog probes it. With nothing to do it does
/// not wake at all. Each round answers the watchdog's probes sent before it
/// (``ProgressMonitor``), so a loop stuck in a check stops the pings.
public struct CheckSchedulerService: Service, CustomStringConvertible {
    let checker: KeyChecker
    let clock: any SchedulerClock
    let readiness: Readiness
    let progress: ProgressMonitor
    /// Test seam for the system tests (`KEYD_TEST_STALL_FILE`): while this file holds
    /// the daemon's pid, the loop stops turning — as a hung check would — so that the
    /// watchdog's reaction can be seen under a real systemd. Looked at when a round
    /// begins (the watchdog's probes begin rounds), then every second while it holds.
    var stallFile: String? = nil

    public var description: String { "CheckSchedulerService" }

    public func run() async throws {
        try await runUntilGracefulShutdown(after: readiness) {
            while !Task.isCancelled {
                while let stallFile, Self.holdsOwnPID(stallFile), !Task.isCancelled {
                    try await clock.sleep(for: .seconds(1))
                }
                let probe = progress.roundStarted()
                let next = await checker.tick()
                progress.roundEnded(through: probe, at: clock.now)
                await checker.waitForWork(until: next)
            }
        }
    }

    static func holdsOwnPID(_ path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path) else { return false }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            == String(ProcessInfo.processInfo.processIdentifier)
    }
}
