import Foundation
import Logging
import Synchronization

/// What every connection on both sockets shares: the key as committed, the checker
/// and spool for status and admin calls, the access policy, limits and counters.
public final class ServingContext: Sendable {
    public let current: CurrentKey
    public let store: KeyStore
    public let checker: KeyChecker
    public let intake: SpoolIntake
    public let counters: ServingCounters
    public let limits: ServingLimits
    let logger: Logger
    let startedAt: Date
    private let policyBox: Mutex<AccessPolicy>

    public init(
        store: KeyStore, checker: KeyChecker, intake: SpoolIntake, policy: AccessPolicy, limits: ServingLimits,
        logger: Logger, startedAt: Date = Date()
    ) {
        self.current = store.current
        self.store = store
        self.checker = checker
        self.intake = intake
        self.counters = ServingCounters(limits: limits)
        self.limits = limits
        self.logger = logger
        self.startedAt = startedAt
        self.policyBox = Mutex(policy)
    }

    public var policy: AccessPolicy { policyBox.withLock { $0 } }

    /// Installs a policy resolved anew (configuration reload).
    public func replacePolicy(_ policy: AccessPolicy) { policyBox.withLock { $0 = policy } }

    /// Logs ACCESS_DENIED: who (uid, pid, comm, unit) asked for what.
    func denied(_ peer: Peer, asked: String, needed: String) {
        counters.countDenied()
        let comm = peer.comm
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
        logger.event(.accessDenied, "refused \(who): \(asked) needs \(needed)", metadata: metadata)
    }
}
