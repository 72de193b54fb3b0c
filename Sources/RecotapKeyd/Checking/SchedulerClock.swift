import Foundation
import NIOCore
import NIOPosix

/// Where the checker and the watchdog get their time: the wall clock (for what is
/// stored and shown) and cancellable sleeps. Production uses ``SystemSchedulerClock``;
/// tests use a manual clock, so hours of schedule run in milliseconds.
public protocol SchedulerClock: Sendable {
    var now: Date { get }
    /// Sleeps for `duration`; throws `CancellationError` when the task is cancelled.
    func sleep(for duration: Duration) async throws
}

/// The wall clock, and sleeps on a SwiftNIO event loop's timer.
///
/// Not `Task.sleep`: on Linux its timers live in libdispatch, which re-arms its timer
/// descriptor every second while any sleep is pending — an hour's sleep until the next
/// check would wake the process 3,600 times. An event loop sleeps in `epoll_wait`
/// until its earliest timer (measured: README "Performance", idle wake-ups).
public struct SystemSchedulerClock: SchedulerClock {
    public init() {}
    public var now: Date { Date() }
    public func sleep(for duration: Duration) async throws {
        try await Self.sleep(for: duration)
    }

    /// One event loop of its own for the daemon's sleeps (and the peer log's journal
    /// writes), apart from the loops that serve the sockets: a serving loop blocked by
    /// a bug must not also stop the watchdog that is there to notice it.
    public static let timerLoop: any EventLoop = MultiThreadedEventLoopGroup(numberOfThreads: 1).next()

    /// Sleeps on ``timerLoop``; throws `CancellationError` when the task is cancelled.
    public static func sleep(for duration: Duration, on loop: any EventLoop = timerLoop) async throws {
        try Task.checkCancellation()
        let scheduled = loop.scheduleTask(in: TimeAmount(max(duration, .zero))) {}
        do {
            try await withTaskCancellationHandler {
                try await scheduled.futureResult.get()
            } onCancel: {
                scheduled.cancel()
            }
        } catch {
            throw CancellationError()
        }
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
