import Foundation
import Logging
import NIOCore
import Synchronization

/// What a local peer can make the daemon write to the journal: refusals, reports of a
/// 401, requests for a key the daemon cannot give. Any local user can cause these as
/// fast as it can connect, so they are limited per uid — the first
/// ``Limits/perUID`` in a window (a minute, one for all uids) in full, then only
/// counted — and what was counted is logged once per uid and window as
/// `ACCESS_DENIED_SUPPRESSED` with the counts. However many attempts one uid makes,
/// it costs the journal at most `perUID + 1` entries a window; all uids together at
/// most `total + maxSummaries + 1`.
/// So journald's own rate limit, which drops *all* of a unit's messages once it
/// trips, is never reached by peers, and `KEY_INVALIDATED` always gets through.
///
/// The entries are written from a queue of their own: the decision is taken on the
/// event loop (a lock and a counter), but reading the peer's `comm` from `/proc` and
/// the journal write itself — which blocks when journald is backed up — never are.
public final class PeerLog: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Entries in full per uid per window.
        public var perUID = 5
        /// Entries in full per window, all uids together.
        public var total = 200
        /// Per-uid summaries per window; the uids beyond share one summary.
        public var maxSummaries = 100
        public var window: Duration = .seconds(60)
        public init() {}
    }

    /// The kinds of peer-triggered entry, as counted in the summary.
    public enum Kind: String, Sendable, CaseIterable {
        case accessDenied = "access_denied"
        case consumerReport = "consumer_report"
        case credentialUnavailable = "credential_unavailable"
        case credentialServed = "credential_served"
        case overLimit = "over_limit"
    }

    /// One uid's share of the current window.
    private struct Share {
        var logged = 0
        var suppressed: [Kind: Int] = [:]
    }

    private struct State {
        /// One window for every uid: summaries and the total are counted per window,
        /// so no staggering of uids gets more than the bound.
        var windowStart: Date?
        var loggedTotal = 0
        var perUID: [UInt32: Share] = [:]
        /// Every entry written and suppressed, for `/v1/status` and the tests.
        var written = 0
        var dropped = 0
        /// Whether the current window has suppressed anything (so owes summaries).
        var owesSummaries = false

        /// Ends the window if it is over (or the clock went back), returning what it
        /// suppressed by uid, and starts the next one.
        mutating func roll(at now: Date, window: Duration) -> (start: Date, ended: [(uid: UInt32, share: Share)])? {
            guard let start = windowStart else {
                windowStart = now
                return nil
            }
            let age = now.since(start)
            guard age >= window || age < .zero else { return nil }
            let ended = perUID.filter { !$0.value.suppressed.isEmpty }.map { (uid: $0.key, share: $0.value) }
                .sorted { $0.uid < $1.uid }
            windowStart = now
            loggedTotal = 0
            perUID = [:]
            owesSummaries = false
            return (start, ended)
        }
    }

    static let maxTrackedUIDs = 4096
    /// The slot of the uids beyond ``maxTrackedUIDs`` (no real uid: it is `(uid_t)-1`).
    static let sharedUID = UInt32.max

    private let logger: Logger
    private let limits: Limits
    private let state = Mutex(State())
    /// Where entries are written, in order, off the loops serving the sockets: the
    /// daemon's own background loop (not a dispatch queue, whose worker threads would
    /// start libdispatch's once-a-second pool monitor: README "Performance").
    private let queue: any EventLoop = SystemSchedulerClock.timerLoop
    /// Rung when a window first suppresses an entry: its summaries fall due at its end.
    let summariesOwed = Wakeup()

    /// Tells the time of every entry and window.
    private let clock: any SchedulerClock

    public init(logger: Logger, limits: Limits = Limits(), clock: any SchedulerClock = SystemSchedulerClock()) {
        self.logger = logger
        self.limits = limits
        self.clock = clock
    }

    /// Logs one entry caused by `peer` as `logged`, unless its uid has had its share
    /// of this window (`limited: false` for what only trusted peers cause: it is
    /// still written off the event loop). `entry` runs on the log queue, with the
    /// peer's `comm` when it can still be read, and returns the message and metadata.
    /// Returns when the entry is written (nil when it is not): a caller whose entry
    /// names the peer's `comm` answers the peer after that, for a peer that has its
    /// answer may exit before its `/proc/PID/comm` is read.
    @discardableResult
    func record(
        _ kind: Kind, _ logged: Logged, peer: Peer, limited: Bool = true, at time: Date? = nil,
        _ entry: @escaping @Sendable (_ comm: String?) -> (String, Logger.Metadata)
    ) -> EventLoopFuture<Void>? {
        if case .level(let level) = logged, level < logger.logLevel { return nil }
        let now = time ?? clock.now
        let (admitted, ended, firstSuppressed) = state.withLock {
            state -> (Bool, (start: Date, ended: [(uid: UInt32, share: Share)])?, Bool) in
            let ended = state.roll(at: now, window: limits.window)
            guard limited else { return (true, ended, false) }
            // Tracked uids are bounded too (a user with subordinate uids is many):
            // past the bound, new uids share one slot.
            let uid = state.perUID[peer.uid] != nil || state.perUID.count < Self.maxTrackedUIDs ? peer.uid : Self.sharedUID
            var share = state.perUID[uid] ?? Share()
            let admit = share.logged < limits.perUID && state.loggedTotal < limits.total
            if admit {
                share.logged += 1
                state.loggedTotal += 1
                state.written += 1
            } else {
                share.suppressed[kind, default: 0] += 1
                state.dropped += 1
            }
            state.perUID[uid] = share
            let first = !admit && !state.owesSummaries
            if !admit { state.owesSummaries = true }
            return (admit, ended, first)
        }
        if let ended { summarise(ended.ended, since: ended.start) }
        if firstSuppressed { summariesOwed.ring() }
        guard admitted else { return nil }
        let logger = self.logger
        return queue.submit {
            let (message, metadata) = entry(peer.comm)
            switch logged {
            case .event(let event): logger.event(event, "\(message)", metadata: metadata)
            case .level(let level): logger.log(level: level, "\(message)", metadata: metadata)
            }
        }
    }

    /// How an entry is logged: as one of the events operators alert on, or at a level.
    enum Logged: Sendable {
        case event(KeydEvent)
        case level(Logger.Level)
    }

    /// When the current window's summaries are due (its end), if it owes any.
    func summariesDue() -> Date? {
        let window = limits.window
        return state.withLock { state in
            guard state.owesSummaries, let start = state.windowStart else { return nil }
            return start.adding(window)
        }
    }

    /// Ends the window if it is over and logs its summaries. Called by the serving
    /// service when a window that suppressed entries ends (a window also ends at the
    /// first entry after it).
    public func flush(now time: Date? = nil) {
        let now = time ?? clock.now
        let limits = self.limits
        guard let ended = state.withLock({ $0.roll(at: now, window: limits.window) }) else { return }
        summarise(ended.ended, since: ended.start)
    }

    /// One summary for each uid that had entries suppressed in the window (the first
    /// ``Limits/maxSummaries``; the rest, and the shared slot, in one more).
    private func summarise(_ ended: [(uid: UInt32, share: Share)], since start: Date) {
        guard !ended.isEmpty else { return }
        let logger = self.logger
        let limits = self.limits
        let since = start.formatted(.iso8601)
        queue.execute {
            let named = ended.filter { $0.uid != Self.sharedUID }
            for (uid, share) in named.prefix(limits.maxSummaries) {
                let total = share.suppressed.values.reduce(0, +)
                var metadata: Logger.Metadata = [
                    LogKey.peerUID: .stringConvertible(uid), "suppressed.count": .stringConvertible(total),
                    "suppressed.since": .string(since),
                ]
                for (kind, count) in share.suppressed { metadata["suppressed.\(kind.rawValue)"] = .stringConvertible(count) }
                logger.event(
                    .accessDeniedSuppressed,
                    "uid \(uid) caused \(total) more entries (\(Self.describe(share.suppressed))) since \(since) that were counted, not logged one by one",
                    metadata: metadata)
            }
            let rest = Array(named.dropFirst(limits.maxSummaries)) + ended.filter { $0.uid == Self.sharedUID }
            guard !rest.isEmpty else { return }
            var suppressed: [Kind: Int] = [:]
            for (_, share) in rest { suppressed.merge(share.suppressed, uniquingKeysWith: +) }
            let total = suppressed.values.reduce(0, +)
            logger.event(
                .accessDeniedSuppressed,
                "more uids caused \(total) more entries (\(Self.describe(suppressed))) since \(since) that were counted, not logged one by one",
                metadata: [
                    "suppressed.count": .stringConvertible(total), "suppressed.uids": .stringConvertible(rest.count),
                    "suppressed.since": .string(since),
                ])
        }
    }

    /// Entries written in full and entries only counted, since the start.
    public var counts: (written: Int, suppressed: Int) { state.withLock { ($0.written, $0.dropped) } }

    /// Waits until every entry handed to the queue so far is written (tests, shutdown).
    public func drain() {
        guard !queue.inEventLoop else { return }
        let done = DispatchSemaphore(value: 0)
        queue.execute { done.signal() }
        done.wait()
    }

    static func describe(_ suppressed: [Kind: Int]) -> String {
        suppressed.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key.rawValue)" }
            .joined(separator: ", ")
    }
}
