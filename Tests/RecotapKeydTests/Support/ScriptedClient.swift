import Foundation
import Synchronization

@testable import RecotapKeyd

/// A ``KeyCheckingClient`` that answers from a script and records every call, with
/// the time on the test's clock and the key's fingerprint.
final class ScriptedClient: KeyCheckingClient, Sendable {
    struct Call: Equatable {
        var at: Date
        var fingerprint: String
    }
    private struct State {
        var script: [CheckResult] = []
        var fallback = CheckResult(outcome: .valid, httpStatus: 200, latency: .milliseconds(20))
        var calls: [Call] = []
        var hang = false
        var held = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    private let clock: any SchedulerClock

    init(clock: any SchedulerClock) {
        self.clock = clock
    }

    var calls: [Call] { state.withLock { $0.calls } }

    /// Answers used in order, then `fallback` forever.
    func script(_ answers: [CheckResult], then fallback: CheckResult? = nil) {
        state.withLock {
            $0.script = answers
            if let fallback { $0.fallback = fallback }
        }
    }

    /// From now on, calls never return (until cancelled): a stalled scheduler.
    func hang() { state.withLock { $0.hang = true } }

    /// Calls wait (after being recorded) until ``release()``.
    func hold() { state.withLock { $0.held = true } }

    func release() {
        let waiting = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.held = false
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
    }

    func check(_ key: APIKey) async -> CheckResult {
        let (answer, hang) = state.withLock { state -> (CheckResult, Bool) in
            state.calls.append(Call(at: clock.now, fingerprint: key.fingerprint))
            if state.hang { return (state.fallback, true) }
            return (state.script.isEmpty ? state.fallback : state.script.removeFirst(), false)
        }
        if hang {
            try? await Task.sleep(for: .seconds(3600))
            return CheckResult(outcome: .unreachable, reason: "cancelled")
        }
        await withCheckedContinuation { continuation in
            let wait = state.withLock { state -> Bool in
                if state.held { state.waiting.append(continuation) }
                return state.held
            }
            if !wait { continuation.resume() }
        }
        return answer
    }

    static let valid = CheckResult(outcome: .valid, httpStatus: 200, latency: .milliseconds(20))
    static let invalid = CheckResult(outcome: .invalid, httpStatus: 401, reason: "Invalid API key", latency: .milliseconds(20))
    static func unreachable(_ status: Int? = 503, _ reason: String = "HTTP 503 Service Unavailable") -> CheckResult {
        CheckResult(outcome: .unreachable, httpStatus: status, reason: reason, latency: .milliseconds(20))
    }
}
