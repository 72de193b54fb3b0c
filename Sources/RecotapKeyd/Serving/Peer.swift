import CSystemd
import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Who is on the other end of an accepted Unix socket connection, as the kernel says:
/// `SO_PEERCRED` (uid, gid, pid at `connect` time), read right after `accept` and
/// before a byte of the request; and, when systemd connects on behalf of a unit for
/// `LoadCredential=`, the unit named in the peer's abstract socket address.
public struct Peer: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    /// Set when a root peer's address is systemd's `\0<random>/unit/<unit>/<credential-id>`.
    public var unit: String?
    public var credentialID: String?

    public init(pid: Int32, uid: UInt32, gid: UInt32, unit: String? = nil, credentialID: String? = nil) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.unit = unit
        self.credentialID = credentialID
    }

    /// Reads the peer of an accepted channel, before any read (call from the child
    /// channel's initializer).
    public static func of(_ channel: any Channel) -> EventLoopFuture<Peer> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(PeerError.notASocket)
        }
        let credentials: EventLoopFuture<recotap_ucred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        let remote = channel.remoteAddress
        return credentials.map { credentials in
            var peer = Peer(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
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

    /// The process's name from `/proc/PID/comm`, when it can still be read (the
    /// process may be gone, or `/proc` hidden).
    public var comm: String? {
        guard pid > 0, let data = FileManager.default.contents(atPath: "/proc/\(pid)/comm") else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }

    /// Every group that counts for this peer: its gid, the supplementary groups its
    /// process holds (`/proc/PID/status`), and those the group database gives its uid.
    public func groups() -> Set<UInt32> {
        var groups: Set<UInt32> = [gid]
        if pid > 0, let data = FileManager.default.contents(atPath: "/proc/\(pid)/status") {
            let text = String(decoding: data, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Groups:") }) {
                for field in line.dropFirst("Groups:".count).split(whereSeparator: \.isWhitespace) {
                    if let id = UInt32(field) { groups.insert(id) }
                }
            }
        }
        if let name = UserDatabase.userName(uid: uid) {
            groups.formUnion(UserDatabase.groupList(user: name, primaryGID: gid))
        }
        return groups
    }
}

public enum PeerError: Error, CustomStringConvertible {
    case notASocket
    public var description: String { "the connection is not a socket: no SO_PEERCRED" }
}

/// Lookups in the user and group databases (NSS), thread-safe (`_r` variants).
enum UserDatabase {
    static func userName(uid: UInt32) -> String? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let name = entry.pw_name
        else { return nil }
        return String(cString: name)
    }

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

    static func groupList(user: String, primaryGID: UInt32) -> [UInt32] {
        var count: Int32 = 64
        while true {
            var groups = [gid_t](repeating: 0, count: Int(count))
            var found = count
            if getgrouplist(user, primaryGID, &groups, &found) >= 0 {
                return Array(groups.prefix(Int(found)))
            }
            guard found > count, found < 65_536 else { return [] }
            count = found
        }
    }
}

typealias group_struct = Glibc.group
