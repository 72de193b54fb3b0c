import NIOCore
import Synchronization

/// The bounds on what one client can make the daemon hold (README, "Serving the key"). Fixed, not
/// configuration: they are far above what a well-behaved consumer needs and low enough
/// that no local user can exhaust the daemon.
public struct ServingLimits: Sendable, Equatable {
    /// Request line and headers together (larger: 431).
    public var maxHeaderBytes = 8 * 1024
    /// Request body (larger: 413).
    public var maxBodyBytes = 4 * 1024
    /// A request must arrive in full within this long of its first byte (else 408).
    public var requestReadTimeout: Duration = .seconds(10)
    /// A kept-alive connection with no request for this long is closed.
    public var idleTimeout: Duration = .seconds(60)
    /// Connections open at once from readers and admins, both sockets together; more
    /// are refused at once. Peers with no role never count here: this capacity is
    /// theirs alone.
    public var maxConnections = 1024
    /// Connections open at once from one uid, so that one user's runaway client
    /// cannot crowd out everyone else's.
    public var maxConnectionsPerUID = 256
    /// Connections open at once from peers with no role (they may ask for
    /// `/v1/status` and `/healthz`, one request a connection), all uids together.
    public var maxNoRoleConnections = 64
    /// Long polls (`GET /v1/key?wait=`) waiting at once.
    public var maxLongPolls = 512
    /// The longest `wait=` honoured; longer values are cut to this.
    public var maxWait: Duration = .seconds(300)

    public init() {}
    public static let standard = ServingLimits()
}

/// Live counts of what the sockets hold, and the connections themselves (with each
/// peer and the role it was given at accept), shared by every connection.
public final class ServingCounters: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var active = 0
        public var refused = 0
        public var longPolls = 0
        public var denied = 0
        public var requests = 0
        /// Of `active`, those from peers with no role.
        public var noRole = 0
    }
    private struct Open {
        var channel: any Channel
        var peer: Peer
        var role: AccessRole
    }
    private struct State {
        var counts = Snapshot()
        var perUID: [UInt32: Int] = [:]
        var open: [ObjectIdentifier: Open] = [:]
    }
    private let state = Mutex(State())
    let limits: ServingLimits

    public init(limits: ServingLimits) { self.limits = limits }

    public var snapshot: Snapshot { state.withLock { $0.counts } }

    /// Admits one more connection, or counts a refusal: peers with no role share
    /// ``ServingLimits/maxNoRoleConnections``; readers and admins the rest.
    func admit(_ channel: any Channel, peer: Peer, role: AccessRole) -> Bool {
        state.withLock { state in
            let mine = state.perUID[peer.uid, default: 0]
            let roleFull = role == .none
                ? state.counts.noRole >= limits.maxNoRoleConnections
                : state.counts.active - state.counts.noRole >= limits.maxConnections
            guard !roleFull, mine < limits.maxConnectionsPerUID else {
                state.counts.refused += 1
                return false
            }
            state.counts.active += 1
            if role == .none { state.counts.noRole += 1 }
            state.perUID[peer.uid] = mine + 1
            state.open[ObjectIdentifier(channel)] = Open(channel: channel, peer: peer, role: role)
            return true
        }
    }

    func release(_ channel: any Channel) {
        state.withLock { state in
            guard let open = state.open.removeValue(forKey: ObjectIdentifier(channel)) else { return }
            state.counts.active -= 1
            if open.role == .none { state.counts.noRole -= 1 }
            let left = state.perUID[open.peer.uid, default: 1] - 1
            state.perUID[open.peer.uid] = left > 0 ? left : nil
        }
    }

    /// The open connections for which `match(peer, role at accept)` holds.
    func connections(where match: (Peer, AccessRole) -> Bool) -> [any Channel] {
        state.withLock { state in state.open.values.filter { match($0.peer, $0.role) }.map(\.channel) }
    }

    func beginLongPoll() -> Bool {
        state.withLock { state in
            guard state.counts.longPolls < limits.maxLongPolls else { return false }
            state.counts.longPolls += 1
            return true
        }
    }

    func endLongPoll() { state.withLock { $0.counts.longPolls -= 1 } }
    func countDenied() { state.withLock { $0.counts.denied += 1 } }
    func countRequest() { state.withLock { $0.counts.requests += 1 } }
}
