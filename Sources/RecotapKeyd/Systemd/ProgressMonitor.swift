import Foundation
import Synchronization

/// How the watchdog sees that the scheduler's loop still runs, without a loop that
/// wakes up only to say so: each watchdog round sends a probe (``probe(at:)``), which
/// wakes the loop; the loop answers every probe sent before the round it then runs
/// (``roundStarted()`` / ``roundEnded(through:at:)``). A probe left unanswered for
/// longer than the watchdog's window means the loop is stuck — in a check that never
/// returns, or not running at all.
public final class ProgressMonitor: Sendable {
    private struct State {
        var sent: UInt64 = 0
        var answered: UInt64 = 0
        /// When the oldest unanswered probe was sent.
        var pendingSince: Date?
        var lastRoundAt: Date?
    }
    private let state: Mutex<State>
    /// Rung with each probe: the loop's doorbell.
    private let wakeups: Wakeup?

    /// `start`: counted as the loop's last round until its first (for the log line).
    public init(start: Date? = nil, wakeups: Wakeup? = nil) {
        state = Mutex(State(lastRoundAt: start))
        self.wakeups = wakeups
    }

    /// Asks the loop to come round (one probe outstanding at a time).
    public func probe(at now: Date) {
        state.withLock { state in
            guard state.answered == state.sent else { return }
            state.sent += 1
            state.pendingSince = now
        }
        wakeups?.ring()
    }

    /// Called by the loop as a round begins: the probes this round will answer.
    public func roundStarted() -> UInt64 {
        state.withLock { $0.sent }
    }

    /// Called by the loop when a round is done.
    public func roundEnded(through probe: UInt64, at now: Date) {
        state.withLock { state in
            state.lastRoundAt = now
            guard probe > state.answered else { return }
            state.answered = probe
            if state.answered == state.sent { state.pendingSince = nil }
        }
    }

    public var lastRoundAt: Date? { state.withLock { $0.lastRoundAt } }

    /// Whether every probe sent more than `window` before `now` has been answered.
    public func isAlive(at now: Date, window: Duration) -> Bool {
        state.withLock { state in
            guard let since = state.pendingSince else { return true }
            return now.since(since) <= window
        }
    }
}
