import CSystemd
import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Who is on the other end of an accepted Unix socket connection, as the kernel says:
/// `SO_PEERCRED` (uid, gid, pid at `connect` time) and `SO_PEERGROUPS` (the
/// supplementary groups the peer held then), read in the child channel's initializer
/// before a byte of the request; and, when systemd connects on behalf of a unit for
/// `LoadCredential=`, the unit named in the peer's abstract socket address.
///
/// These values, fixed at `connect`, are all that access decisions use: nothing is
/// looked up later by pid (which the peer may have given up, and another process
/// taken) or in the user database (which may be slow, and is not what the peer's
/// process holds).
public struct Peer: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    /// The primary gid and the supplementary groups, as the kernel reported them. The
    /// root group (0) counts only as the primary gid: the kernel's answer cannot tell
    /// it from an unused slot.
    public var groups: Set<UInt32>
    /// False when the kernel could not list the supplementary groups (more than
    /// ``maxGroups``, or `SO_PEERGROUPS` unsupported): only the primary gid counts then.
    public var groupsComplete: Bool
    /// Set when a root peer's address is systemd's `\0<random>/unit/<unit>/<credential-id>`.
    public var unit: String?
    public var credentialID: String?

    /// The most supplementary groups read from the kernel.
    public static let maxGroups = 256

    public init(
        pid: Int32, uid: UInt32, gid: UInt32, supplementaryGroups: [UInt32] = [], groupsComplete: Bool = true,
        unit: String? = nil, credentialID: String? = nil
    ) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = Set(supplementaryGroups.filter { $0 != 0 }).union([gid])
        self.groupsComplete = groupsComplete
        self.unit = unit
        self.credentialID = credentialID
    }

    /// Reads the peer of an accepted channel, before any read (call from the child
    /// channel's initializer, on its event loop).
    public static func of(_ channel: any Channel) -> EventLoopFuture<Peer> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(PeerError.notASocket)
        }
        let credentials: EventLoopFuture<recotap_ucred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        let remote = channel.remoteAddress
        return credentials.flatMap { credentials in
            let groups: EventLoopFuture<recotap_peer_groups> = provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(RECOTAP_SO_PEERGROUPS))
            return groups.map { Optional($0) }.recover { _ in nil }.map { groups in
                var peer = Peer(
                    pid: credentials.pid, uid: credentials.uid, gid: credentials.gid,
                    supplementaryGroups: groups.map(Self.gids(in:)) ?? [], groupsComplete: groups != nil)
                // Any process may bind any abstract name: the unit form is believed only
                // from root, as which systemd connects for LoadCredential=.
                if credentials.uid == 0, case .unixDomainSocket(let address)? = remote,
                    let (unit, credential) = Self.systemdUnit(fromAbstractAddress: address.address)
                {
                    peer.unit = unit
                    peer.credentialID = credential
                }
                return peer
            }
        }
    }

    /// The gids the kernel wrote: every non-zero slot (the buffer was zero-filled).
    static func gids(in buffer: recotap_peer_groups) -> [UInt32] {
        var copy = buffer
        return withUnsafeBytes(of: &copy.gids) { raw in raw.bindMemory(to: UInt32.self).filter { $0 != 0 } }
    }

    /// Parses systemd's `LoadCredential=` client address: an abstract name (first
    /// byte NUL) of the form `<random>/unit/<unit>/<credential-id>`.
    static func systemdUnit(fromAbstractAddress address: sockaddr_un) -> (unit: String, credentialID: String)? {
        var path = address.sun_path
        let bytes = withUnsafeBytes(of: &path) { Array($0) }
        guard bytes.first == 0 else { return nil }
        let name = bytes.dropFirst().prefix { $0 != 0 }
        return systemdUnit(fromAbstractName: String(decoding: name, as: UTF8.self))
    }

    static func systemdUnit(fromAbstractName name: String) -> (unit: String, credentialID: String)? {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[1] == "unit", !parts[2].isEmpty, !parts[3].isEmpty else { return nil }
        return (String(parts[2]), String(parts[3]))
    }

    /// The process's name from `/proc/PID/comm`, for the log only (the process may be
    /// gone, its pid reused, or `/proc` hidden). Reads a file: never call it on an
    /// event loop.
    public var comm: String? {
        guard pid > 0, let data = FileManager.default.contents(atPath: "/proc/\(pid)/comm") else { return nil }
        let text = String(decoding: data.prefix(64), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}

public enum PeerError: Error, CustomStringConvertible {
    case notASocket
    public var description: String { "the connection is not a socket: no SO_PEERCRED" }
}

/// Lookups in the user and group databases (NSS), thread-safe (`_r` variants): at
/// start and at reload only, never per connection.
enum UserDatabase {
    static func uid(user: String) -> UInt32? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwnam_r(user, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
            return UInt32(user)
        }
        return entry.pw_uid
    }

    static func gid(group: String) -> UInt32? {
        var entry = group_struct()
        var result: UnsafeMutablePointer<group_struct>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getgrnam_r(group, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
            return UInt32(group)
        }
        return entry.gr_gid
    }

    static func groupName(gid: UInt32) -> String? {
        var entry = group_struct()
        var result: UnsafeMutablePointer<group_struct>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getgrgid_r(gid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.gr_name
        else { return nil }
        return String(cString: name)
    }
}

typealias group_struct = Glibc.group
