import Foundation
import Logging
import ServiceLifecycle

/// The scheduler's loop: once the daemon is ready, it asks the ``KeyChecker`` to do
/// what is due, then sleeps on the injected clock until the next thing is due — but
/// never longer than `heartbeat`, so that the ``ProgressMonitor`` it beats on every
/// round shows the watchdog a loop that is still turning.
public struct CheckSchedulerService: Service, CustomStringConvertible {
    let checker: KeyChecker
    let clock: any SchedulerClock
    let readiness: Readiness
    let progress: ProgressMonitor
    let heartbeat: Duration
    /// Run when the loop has ended (closes the API client's connection pool).
    let onStop: @Sendable () async -> Void
    /// Test seam for the system tests (`KEYD_TEST_STALL_FILE`): while this file holds
    /// the daemon's pid, the loop stops turning — as a hung check would — so that the
    /// watchdog's reaction can be seen under a real systemd.
    var stallFile: String? = nil

    public var description: String { "CheckSchedulerService" }

    public func run() async throws {
        try await runUntilGracefulShutdown(after: readiness) {
            while !Task.isCancelled {
                while let stallFile, Self.holdsOwnPID(stallFile), !Task.isCancelled {
                    try await clock.sleep(for: heartbeat)
                }
                progress.beat(at: clock.now)
                let next = await checker.tick()
                let now = clock.now
                progress.beat(at: now)
                let wait = next.map { min(max($0.since(now), .zero), heartbeat) } ?? heartbeat
                if wait > .zero {
                    try await clock.sleep(for: wait)
                } else {
                    await Task.yield()
                }
            }
        }
        await onStop()
    }

    static func holdsOwnPID(_ path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path) else { return false }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            == String(ProcessInfo.processInfo.processIdentifier)
    }
}
