import Foundation

/// Where the checker and the watchdog get their time: the wall clock (for what is
/// stored and shown) and cancellable sleeps. Production uses ``SystemSchedulerClock``;
/// tests use a manual clock, so hours of schedule run in milliseconds.
public protocol SchedulerClock: Sendable {
    var now: Date { get }
    /// Sleeps for `duration`; throws `CancellationError` when the task is cancelled.
    func sleep(for duration: Duration) async throws
}

public struct SystemSchedulerClock: SchedulerClock {
    public init() {}
    public var now: Date { Date() }
    public func sleep(for duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }
}

extension Date {
    /// `self + duration`.
    func adding(_ duration: Duration) -> Date {
        addingTimeInterval(duration.seconds)
    }

    /// The time from `earlier` to `self` (negative when `earlier` is later).
    func since(_ earlier: Date) -> Duration {
        Saturating.duration(seconds: timeIntervalSince(earlier)) ?? .zero
    }
}
