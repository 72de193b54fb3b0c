import CSystemd
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a socket could not be set up; the start fails before `READY=1` (exit 78).
public struct ServingSetupError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var message: String
    public var description: String { "socket \(path): \(message)" }
}

/// The two listening sockets of README "Serving the key", as file descriptors: inherited from
/// systemd socket activation (`LISTEN_FDS`, matched by `FileDescriptorName=api` /
/// `credential`), or bound here at the configured paths.
public struct ListeningSockets: Sendable {
    public enum Origin: String, Sendable { case inherited, bound }

    public struct Socket: Sendable {
        public var name: String
        public var path: String
        public var descriptor: CInt
        public var origin: Origin
        /// Set when the socket file could not be given the readers' group.
        public var warning: String?
    }

    public var api: Socket
    public var credential: Socket

    public static let backlog: CInt = 1024

    /// A descriptor passed by systemd and its `FileDescriptorName=` (the socket unit's
    /// name when not set).
    public struct Inherited: Sendable, Equatable {
        public var name: String
        public var descriptor: CInt
        public init(name: String, descriptor: CInt) {
            self.name = name
            self.descriptor = descriptor
        }
    }

    /// Takes the sockets systemd passed (if any) and binds the others. A passed socket
    /// is matched by its name (`api`, `credential`) or, failing that, by the path it is
    /// bound to — so one socket unit with two `ListenStream=` lines works too (systemd
    /// gives every descriptor of a unit the same name).
    public static func open(
        sockets: KeydConfiguration.Sockets, group: UInt32?, inherited: [Inherited] = inheritedFromSystemd()
    ) throws(ServingSetupError) -> ListeningSockets {
        func passed(_ name: String, _ path: String) -> CInt? {
            inherited.first { $0.name == name }?.descriptor
                ?? inherited.first { sd_is_socket_unix($0.descriptor, Int32(SOCK_STREAM.rawValue), 1, path, 0) > 0 }?.descriptor
        }
        let apiFD = passed("api", sockets.api)
        let credentialFD = passed("credential", sockets.credential)
        let unmatched = inherited.filter { $0.descriptor != apiFD && $0.descriptor != credentialFD }
        if !unmatched.isEmpty {
            throw ServingSetupError(
                path: sockets.api,
                message: "systemd passed \(unmatched.count) socket(s) named \(unmatched.map(\.name).joined(separator: ", ")) that match neither name nor path; give them FileDescriptorName=api / credential or ListenStream= the configured paths (\(sockets.api), \(sockets.credential))")
        }
        func take(_ name: String, _ path: String, _ fd: CInt?) throws(ServingSetupError) -> Socket {
            if let fd {
                guard sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
                    throw ServingSetupError(
                        path: path, message: "the descriptor systemd passed as \"\(name)\" is not a listening Unix stream socket")
                }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return Socket(name: name, path: path, descriptor: fd, origin: .inherited)
            }
            let (fd, warning) = try bind(path: path, mode: sockets.mode, group: group)
            return Socket(name: name, path: path, descriptor: fd, origin: .bound, warning: warning)
        }
        let api = try take("api", sockets.api, apiFD)
        do {
            return ListeningSockets(api: api, credential: try take("credential", sockets.credential, credentialFD))
        } catch {
            api.closeIfBound()
            throw error
        }
    }

    /// The descriptors systemd passed; empty when not socket-activated. Unsets
    /// `LISTEN_*` so that nothing the daemon starts inherits them.
    public static func inheritedFromSystemd() -> [Inherited] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        return (0..<Int(count)).map { index in
            Inherited(name: names?[index].map { String(cString: $0) } ?? "unknown", descriptor: SD_LISTEN_FDS_START + CInt(index))
        }
    }

    /// Binds a Unix stream socket at `path`: the file is created 0600 (the socket's own
    /// mode, set before `bind` — not the umask, which every thread of the process
    /// shares), then given `mode` and `group`. A stale file (nobody answers
    /// on it) is replaced; a live one — another daemon serving there — is an error,
    /// and so is anything at the path that is not a socket.
    static func bind(path: String, mode: UInt32, group: UInt32?) throws(ServingSetupError) -> (CInt, String?) {
        guard var address = address(path) else {
            throw ServingSetupError(
                path: path,
                message: "the path is \(path.utf8.count) bytes long; a Unix socket path must be under \(MemoryLayout.size(ofValue: sockaddr_un().sun_path))")
        }
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw ServingSetupError(path: path, message: "cannot create its directory \(directory): \(error.localizedDescription)")
            }
        }
        try removeStale(path: path)

        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServingSetupError(path: path, message: "socket(): \(String(cString: strerror(errno)))") }
        // The file gets the socket inode's mode less the umask.
        fchmod(fd, 0o600)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        let bindErrno = errno
        guard bound == 0 else {
            close(fd)
            throw ServingSetupError(path: path, message: "cannot bind: \(String(cString: strerror(bindErrno)))")
        }
        // Listening at once: a client that sees the file never meets a refusal. The
        // kernel queues connections until the event loop accepts them.
        guard listen(fd, backlog) == 0 else {
            let failure = String(cString: strerror(errno))
            close(fd)
            unlink(path)
            throw ServingSetupError(path: path, message: "cannot listen: \(failure)")
        }
        var warning: String?
        if let group, chown(path, uid_t.max, group) != 0 {
            // Not a member of the group (run by hand, say): the mode then applies to
            // the daemon's own group. Not fatal, but the operator should know.
            warning = "cannot give it group \(UserDatabase.groupName(gid: group) ?? String(group)): \(String(cString: strerror(errno)))"
        }
        guard chmod(path, mode_t(mode)) == 0 else {
            let failure = String(cString: strerror(errno))
            close(fd)
            unlink(path)
            throw ServingSetupError(path: path, message: "cannot chmod: \(failure)")
        }
        return (fd, warning)
    }

    private static func removeStale(path: String) throws(ServingSetupError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw ServingSetupError(path: path, message: "something that is not a socket is in the way; remove it or choose another path")
        }
        // Live only if it keeps answering: a socket whose process just died can still
        // be held for a moment by a child forked before it closed (until that child
        // execs, which closes it).
        if (0..<3).allSatisfy({ attempt in
            if attempt > 0 { usleep(100_000) }
            return probe(path: path) == 0
        }) {
            throw ServingSetupError(
                path: path, message: "another process is already serving on it (is recotap-keyd running twice?)")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw ServingSetupError(path: path, message: "cannot remove the stale socket: \(String(cString: strerror(errno)))")
        }
    }
}

extension ListeningSockets {
    /// The address of a socket file; `nil` when the path is empty or too long for one.
    static func address(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return address
    }

    /// Tries to connect to the Unix stream socket at `path`: 0 when something answers,
    /// else the `errno` of the failure (`ENOENT`: no file, `ECONNREFUSED`: nobody
    /// listening, `EACCES`: the file's mode keeps this user out).
    public static func probe(path: String) -> Int32 {
        guard var address = address(path) else { return ENAMETOOLONG }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return connected == 0 ? 0 : errno
    }
}

extension ListeningSockets.Socket {
    /// Closes a socket bound here (and removes its file) when the start fails later on.
    func closeIfBound() {
        guard origin == .bound else { return }
        close(descriptor)
        unlink(path)
    }
}
