import Foundation
import Logging
import NIOCore
import Synchronization

/// What every connection on both sockets shares: the key as committed, the checker
/// and spool for status and admin calls, the access policy, limits, counters and the
/// open connections, and the peer log.
public final class ServingContext: Sendable {
    public let current: CurrentKey
    public let store: KeyStore
    public let checker: KeyChecker
    public let intake: SpoolIntake
    /// Re-verification and rollback (`nil`: those endpoints answer 503).
    public let recovery: KeyRecovery?
    /// The key source (`nil`: `source.command` is not set; `POST /v1/fetch` answers 409).
    public let source: KeySource?
    public let counters: ServingCounters
    public let limits: ServingLimits
    public let peerLog: PeerLog
    public let metrics: KeydMetrics
    /// What requests start off the event loops, run by the daemon's ``RequestWorkService``.
    public let work = RequestWork()
    /// Consumers' reports, coalesced into checks.
    let reportChecks = ReportChecks()
    /// `GET /v1/key`'s answer, built once per key.
    package let keyAnswers = PreparedKeyAnswers()
    let logger: Logger
    /// The daemon's clock: uptime, the peer log's windows and their summaries.
    let clock: any SchedulerClock
    let startedAt: Date
    private let policyBox: Mutex<AccessPolicy>

    public init(
        store: KeyStore, checker: KeyChecker, intake: SpoolIntake, policy: AccessPolicy, limits: ServingLimits,
        logger: Logger, clock: any SchedulerClock = SystemSchedulerClock(), startedAt: Date? = nil,
        peerLogLimits: PeerLog.Limits = PeerLog.Limits(), recovery: KeyRecovery? = nil,
        metrics: KeydMetrics = KeydMetrics(), source: KeySource? = nil
    ) {
        self.source = source
        self.metrics = metrics
        self.recovery = recovery
        self.current = store.current
        self.store = store
        self.checker = checker
        self.intake = intake
        self.counters = ServingCounters(limits: limits)
        self.limits = limits
        self.peerLog = PeerLog(logger: logger, limits: peerLogLimits, clock: clock)
        self.logger = logger
        self.clock = clock
        self.startedAt = startedAt ?? clock.now
        self.policyBox = Mutex(policy)
    }

    public var policy: AccessPolicy { policyBox.withLock { $0 } }

    /// The metrics as the Prometheus text format, with the present read now.
    public func renderMetrics(process: Bool = true) -> [UInt8] {
        let counts = counters.snapshot
        return metrics.render(
            current: current.record, longPolls: counts.longPolls, connections: counts.active, process: process)
    }

    /// Installs a policy resolved anew (configuration reload), and closes the open
    /// connections of peers it gives less than they had — with their keep-alives and
    /// long polls, so that none of them receives another answer under the old role.
    /// Returns how many were closed.
    @discardableResult
    public func replacePolicy(_ policy: AccessPolicy) -> Int {
        policyBox.withLock { $0 = policy }
        let revoked = counters.connections { peer, role in policy.role(of: peer) < role }
        for channel in revoked { channel.close(promise: nil) }
        if !revoked.isEmpty {
            logger.notice(
                "access changed: closed \(revoked.count) connection(s) of peers with less access than before",
                metadata: ["connections.closed": .stringConvertible(revoked.count)])
        }
        return revoked.count
    }

    /// Logs ACCESS_DENIED (within the peer log's limits): who (uid, pid, comm, unit)
    /// asked for what. Returns when the entry is written (nil when it is not): answer
    /// the peer after that, while its `comm` can still be read.
    @discardableResult
    func denied(_ peer: Peer, on socket: KeydMetrics.Socket, asked: String, needed: String) -> EventLoopFuture<Void>? {
        counters.countDenied()
        metrics.denied(on: socket)
        return peerLog.record(.accessDenied, .event(.accessDenied), peer: peer) { comm in
            var metadata: Logger.Metadata = [
                LogKey.peerUID: .stringConvertible(peer.uid),
                LogKey.peerPID: .stringConvertible(peer.pid),
                "peer.gid": .stringConvertible(peer.gid),
                "request": .string(asked),
            ]
            if let comm { metadata["peer.comm"] = .string(comm) }
            if let unit = peer.unit { metadata[LogKey.peerUnit] = .string(unit) }
            let who = peer.unit.map { "unit \($0)" }
                ?? "uid \(peer.uid) (pid \(peer.pid)\(comm.map { ", \($0)" } ?? ""))"
            return ("refused \(who): \(asked) needs \(needed)", metadata)
        }
    }
}
