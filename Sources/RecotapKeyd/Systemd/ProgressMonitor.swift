import Foundation
import Synchronization

/// The scheduler's heartbeat, read by the watchdog: the watchdog pings systemd only
/// while the scheduler's loop has come round within its expected window.
public final class ProgressMonitor: Sendable {
    private let lastBeat: Mutex<Date?>

    /// `start`: the time to measure from before the loop's first round (so the
    /// watchdog's first look, which may come before it, is not a false alarm).
    public init(start: Date? = nil) {
        lastBeat = Mutex(start)
    }

    /// Called by the scheduler's loop each time round.
    public func beat(at now: Date) {
        lastBeat.withLock { $0 = now }
    }

    public var lastBeatAt: Date? { lastBeat.withLock { $0 } }

    /// Whether the loop has come round within `window` of `now`.
    public func isAlive(at now: Date, window: Duration) -> Bool {
        guard let last = lastBeatAt else { return false }
        return now.since(last) <= window
    }
}
