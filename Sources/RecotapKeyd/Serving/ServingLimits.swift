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
    /// Connections open at once, both sockets together; more are refused at once.
    public var maxConnections = 1024
    /// Connections open at once from one uid, so that one user's runaway client
    /// cannot crowd out everyone else's.
    public var maxConnectionsPerUID = 256
    /// Long polls (`GET /v1/key?wait=`) waiting at once.
    public var maxLongPolls = 512
    /// The longest `wait=` honoured; longer values are cut to this.
    public var maxWait: Duration = .seconds(300)

    public init() {}
    public static let standard = ServingLimits()
}

/// Live counts of what the sockets hold, shared by every connection.
public final class ServingCounters: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var active = 0
        public var refused = 0
        public var longPolls = 0
        public var denied = 0
        public var requests = 0
    }
    private struct State {
        var counts = Snapshot()
        var perUID: [UInt32: Int] = [:]
    }
    private let state = Mutex(State())
    let limits: ServingLimits

    public init(limits: ServingLimits) { self.limits = limits }

    public var snapshot: Snapshot { state.withLock { $0.counts } }

    /// Admits one more connection from `uid`, or counts a refusal.
    func admit(uid: UInt32) -> Bool {
        state.withLock { state in
            let mine = state.perUID[uid, default: 0]
            guard state.counts.active < limits.maxConnections, mine < limits.maxConnectionsPerUID else {
                state.counts.refused += 1
                return false
            }
            state.counts.active += 1
            state.perUID[uid] = mine + 1
            return true
        }
    }

    func release(uid: UInt32) {
        state.withLock { state in
            state.counts.active -= 1
            let left = state.perUID[uid, default: 1] - 1
            state.perUID[uid] = left > 0 ? left : nil
        }
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
