import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// What a peer may do on the sockets (README, "Serving the key", `access.*`).
public enum AccessRole: Int, Sendable, Comparable, CustomStringConvertible {
    /// Connected (the socket file's mode let it in) but on no list: `/healthz` and
    /// `/v1/status` only.
    case none = 0
    case reader = 1
    /// Admins may also do everything readers may.
    case admin = 2

    public static func < (a: AccessRole, b: AccessRole) -> Bool { a.rawValue < b.rawValue }
    public var description: String {
        switch self {
        case .none: "none"
        case .reader: "reader"
        case .admin: "admin"
        }
    }
}

/// `access.*` with names resolved to ids. Names are resolved once, at start (and on
/// reload): a name that resolves to nothing is reported and matches no one — the
/// default groups need not exist on a development machine.
public struct AccessPolicy: Sendable, Equatable {
    public var readerUIDs: Set<UInt32>
    public var readerGIDs: Set<UInt32>
    public var adminUIDs: Set<UInt32>
    public var adminGIDs: Set<UInt32>
    public var units: Set<String>
    /// `metrics.readers`: who may read `GET /metrics` besides readers and admins.
    public var metricsUIDs: Set<UInt32> = []
    public var metricsGIDs: Set<UInt32> = []
    /// Root and this uid (the daemon's own) are always admins.
    public var ownUID: UInt32
    /// Names in the configuration that did not resolve, e.g. "group recotap-key".
    public var unresolved: [String]
    /// The first readers' group that exists: the socket files' group.
    public var socketGroup: UInt32?

    public init(
        access: KeydConfiguration.Access, metricsReaders: KeydConfiguration.Principals? = nil,
        ownUID: UInt32 = getuid()
    ) {
        var unresolved: [String] = []
        func users(_ names: [String]) -> Set<UInt32> {
            Set(names.compactMap { name in
                let id = UserDatabase.uid(user: name)
                if id == nil { unresolved.append("user \(name)") }
                return id
            })
        }
        func groups(_ names: [String]) -> [UInt32] {
            names.compactMap { name in
                let id = UserDatabase.gid(group: name)
                if id == nil { unresolved.append("group \(name)") }
                return id
            }
        }
        readerUIDs = users(access.readers.users)
        let readerGroups = groups(access.readers.groups)
        readerGIDs = Set(readerGroups)
        adminUIDs = users(access.admins.users)
        adminGIDs = Set(groups(access.admins.groups))
        units = Set(access.units)
        metricsUIDs = users(metricsReaders?.users ?? [])
        metricsGIDs = Set(groups(metricsReaders?.groups ?? []))
        self.ownUID = ownUID
        self.unresolved = unresolved
        socketGroup = readerGroups.first
    }

    /// Says which configured names resolved to nothing (they match no one).
    public func warnAboutUnresolved(_ logger: Logger) {
        guard !unresolved.isEmpty else { return }
        logger.warning(
            "access lists name what this system does not know: \(unresolved.joined(separator: ", ")); they match no one",
            metadata: ["access.unresolved": .array(unresolved.map { .string($0) })])
    }

    /// The peer's role by uid and groups. `groups` is asked for only when the uid
    /// alone does not decide.
    public func role(uid: UInt32, groups: () -> Set<UInt32>) -> AccessRole {
        if uid == 0 || uid == ownUID || adminUIDs.contains(uid) { return .admin }
        let peerGroups = groups()
        if !adminGIDs.isDisjoint(with: peerGroups) { return .admin }
        if readerUIDs.contains(uid) || !readerGIDs.isDisjoint(with: peerGroups) { return .reader }
        return .none
    }

    /// Whether the peer may read `GET /metrics`: readers, admins and `metrics.readers`.
    public func mayReadMetrics(_ peer: Peer) -> Bool {
        if role(of: peer) >= .reader || metricsUIDs.contains(peer.uid) { return true }
        return !metricsGIDs.isDisjoint(with: peer.groups)
    }

    public func role(of peer: Peer) -> AccessRole {
        role(uid: peer.uid, groups: { peer.groups })
    }

    /// Whether the raw credential socket may hand this peer the key. A connection
    /// made by systemd for a unit's `LoadCredential=` is decided by `access.units`
    /// alone (systemd connects as root, which would otherwise always pass).
    public func mayReceiveCredential(_ peer: Peer) -> Bool {
        if let unit = peer.unit { return units.contains(unit) }
        return role(of: peer) >= .reader
    }
}
