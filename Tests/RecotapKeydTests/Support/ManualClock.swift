import Foundation
import Synchronization

@testable import RecotapKeyd

/// A clock that moves only when the test says so. Sleepers wake, in deadline order,
/// when ``advance(by:)`` passes their deadline; cancellation wakes them with an error.
final class ManualClock: SchedulerClock, Sendable {
    private struct Sleeper {
        var deadline: Duration
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var elapsed: Duration = .zero
        var sleepers: [UUID: Sleeper] = [:]
    }
    private let state = Mutex(State())
    let start: Date

    init(start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        self.start = start
    }

    var now: Date { start.addingTimeInterval(state.withLock { $0.elapsed }.seconds) }
    var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    func sleep(for duration: Duration) async throws {
        let id = UUID()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let immediate = state.withLock { state -> Bool in
                    if Task.isCancelled || duration <= .zero { return true }
                    state.sleepers[id] = Sleeper(deadline: state.elapsed + duration, continuation: continuation)
                    return false
                }
                if immediate {
                    if Task.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume() }
                }
            }
        } onCancel: {
            state.withLock { $0.sleepers.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has come.
    func advance(by duration: Duration) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.elapsed += duration
            let due = state.sleepers.filter { $0.value.deadline <= state.elapsed }
            for id in due.keys { state.sleepers.removeValue(forKey: id) }
            return due.values.sorted { $0.deadline < $1.deadline }.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Waits (in real time, briefly) until exactly `count` tasks sleep on this clock —
    /// that is, until everything woken by the last advance has done its work.
    @discardableResult
    /// The timeout is generous: on a loaded 2-core machine with the real-binary suites
    /// beside it, a pass through the store has once taken longer than 10 s.
    func settle(sleepers count: Int, timeout: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        var stableRounds = 0
        while ContinuousClock.now < deadline {
            if sleeperCount == count {
                stableRounds += 1
                if stableRounds >= 3 { return true }
            } else {
                stableRounds = 0
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return false
    }

    /// Advances in steps of `step` up to `total`, settling after each.
    func run(for total: Duration, step: Duration, sleepers count: Int) async {
        var done: Duration = .zero
        while done < total {
            advance(by: step)
            done += step
            await settle(sleepers: count)
        }
    }
}
