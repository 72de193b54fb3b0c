import Foundation
import Logging
import Synchronization

/// What a local peer can make the daemon write to the journal: refusals, reports of a
/// 401, requests for a key the daemon cannot give. Any local user can cause these as
/// fast as it can connect, so they are limited per uid — the first
/// ``Limits/perUID`` in a minute in full, then only counted — and what was counted
/// is logged once per uid and minute as `ACCESS_DENIED_SUPPRESSED` with the counts.
/// However many attempts one uid makes, it costs the journal at most
/// `perUID + 1` entries a minute; all uids together at most `total + maxSummaries + 1`.
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

    private struct Window {
        var start: Date
        var logged = 0
        var suppressed: [Kind: Int] = [:]
    }

    private struct State {
        var windowStart: Date?
        var loggedTotal = 0
        var perUID: [UInt32: Window] = [:]
        /// Every entry written and suppressed, for `/v1/status` and the tests.
        var written = 0
        var dropped = 0
    }

    static let maxTrackedUIDs = 4096
    /// The slot of the uids beyond ``maxTrackedUIDs`` (no real uid: it is `(uid_t)-1`).
    static let sharedUID = UInt32.max

    private let logger: Logger
    private let limits: Limits
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "recotap-keyd.peer-log")

    public init(logger: Logger, limits: Limits = Limits()) {
        self.logger = logger
        self.limits = limits
    }

    /// Logs one entry caused by `peer` as `logged`, unless its uid has had its share
    /// of this window (`limited: false` for what only trusted peers cause: it is
    /// still written off the event loop). `entry` runs on the log queue, with the
    /// peer's `comm` when it can still be read, and returns the message and metadata.
    func record(
        _ kind: Kind, _ logged: Logged, peer: Peer, limited: Bool = true, at now: Date = Date(),
        _ entry: @escaping @Sendable (_ comm: String?) -> (String, Logger.Metadata)
    ) {
        if case .level(let level) = logged, level < logger.logLevel { return }
        let admitted = !limited || state.withLock { state -> Bool in
            if let start = state.windowStart, now.since(start) < limits.window {
                // same global window
            } else {
                state.windowStart = now
                state.loggedTotal = 0
            }
            // Tracked uids are bounded too (a user with subordinate uids is many):
            // past the bound, new uids share one slot.
            let uid = state.perUID[peer.uid] != nil || state.perUID.count < Self.maxTrackedUIDs ? peer.uid : Self.sharedUID
            var window = state.perUID[uid] ?? Window(start: now)
            if window.start > now { window.start = now }
            let admit = window.logged < limits.perUID && state.loggedTotal < limits.total
            if admit {
                window.logged += 1
                state.loggedTotal += 1
                state.written += 1
            } else {
                window.suppressed[kind, default: 0] += 1
                state.dropped += 1
            }
            state.perUID[uid] = window
            return admit
        }
        guard admitted else { return }
        let logger = self.logger
        queue.async {
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

    /// Ends the windows older than ``Limits/window`` and logs one summary for each uid
    /// that had entries suppressed in them (the first ``Limits/maxSummaries``; the
    /// rest in one more). Called every few seconds by the serving service.
    public func flush(now: Date = Date()) {
        let limits = self.limits
        let ended = state.withLock { state -> [(uid: UInt32, window: Window)] in
            let over = state.perUID.filter { now.since($0.value.start) >= limits.window }
            for uid in over.keys { state.perUID[uid] = nil }
            return over.filter { !$0.value.suppressed.isEmpty }.map { ($0.key, $0.value) }.sorted { $0.uid < $1.uid }
        }
        guard !ended.isEmpty else { return }
        let logger = self.logger
        queue.async {
            for (uid, window) in ended.prefix(limits.maxSummaries) where uid != Self.sharedUID {
                let total = window.suppressed.values.reduce(0, +)
                var metadata: Logger.Metadata = [
                    LogKey.peerUID: .stringConvertible(uid), "suppressed.count": .stringConvertible(total),
                    "suppressed.since": .string(window.start.formatted(.iso8601)),
                ]
                for (kind, count) in window.suppressed { metadata["suppressed.\(kind.rawValue)"] = .stringConvertible(count) }
                logger.event(
                    .accessDeniedSuppressed,
                    "uid \(uid) caused \(total) more entries (\(Self.describe(window.suppressed))) since \(window.start.formatted(.iso8601)) that were counted, not logged one by one",
                    metadata: metadata)
            }
            let rest = ended.dropFirst(limits.maxSummaries) + ended.prefix(limits.maxSummaries).filter { $0.uid == Self.sharedUID }
            if !rest.isEmpty {
                var suppressed: [Kind: Int] = [:]
                for (_, window) in rest { suppressed.merge(window.suppressed, uniquingKeysWith: +) }
                let total = suppressed.values.reduce(0, +)
                logger.event(
                    .accessDeniedSuppressed,
                    "\(rest.count) more uids caused \(total) more entries (\(Self.describe(suppressed))) that were counted, not logged one by one",
                    metadata: ["suppressed.count": .stringConvertible(total), "suppressed.uids": .stringConvertible(rest.count)])
            }
        }
    }

    /// Entries written in full and entries only counted, since the start.
    public var counts: (written: Int, suppressed: Int) { state.withLock { ($0.written, $0.dropped) } }

    /// Waits until every entry handed to the queue so far is written (tests, shutdown).
    public func drain() { queue.sync {} }

    static func describe(_ suppressed: [Kind: Int]) -> String {
        suppressed.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key.rawValue)" }
            .joined(separator: ", ")
    }
}
