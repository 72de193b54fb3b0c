import Foundation
import Testing

@testable import RecotapKeyd

/// SO_PEERCRED access control with real peers of other uids (setpriv), and the raw
/// credential socket with systemd's abstract peer addresses.
@Suite("Serving: access control and credential.sock (real binary)", .serialized)
struct ServingAccessTests {
    static let key = "rtk_access_key_0123456789"
    /// A group no one on the machine has: numeric ids are accepted where names are.
    static let readerGroup: UInt32 = 54_321
    static let adminGroup: UInt32 = 54_322
    static let access = """
        access:
          readers: { groups: ["\(readerGroup)"] }
          admins: { groups: ["\(adminGroup)"] }
          units: [allowed.service]
        """

    /// The daemon serving the key on sockets of mode 0666 in a directory anyone can
    /// enter, so that a refused peer reaches the daemon's own check.
    private func openToEveryone() async throws -> ServedDaemon {
        let served = try await ServedDaemon(validKeys: [Self.key], access: Self.access, socketMode: "0666")
        chmod(served.dir.file("run"), 0o755)
        try await served.activate(Self.key)
        return served
    }

    @Test(
        "a uid on no list gets 403 and an ACCESS_DENIED entry (uid, pid, comm, request); a reader by supplementary group gets the key but not admin calls",
        .enabled(if: canDropToNobody && haveCurl, "needs root, setpriv and curl"))
    func uidAndGroups() async throws {
        let served = try await openToEveryone()

        let stranger = try await served.curl("/v1/key", as: asNobody())
        #expect(stranger.status == 403)
        #expect(stranger.json?["error"]?.string == "access_denied")
        #expect(!stranger.text.contains(Self.key))
        let denied = try #require(try await served.logged("event=ACCESS_DENIED") ? served.daemon.output : nil)
        #expect(denied.contains("peer.uid=65534"))
        #expect(denied.contains("peer.comm=curl"))
        #expect(denied.contains("peer.pid="))
        #expect(denied.contains("request=\"GET /v1/key\""))

        // Health and status are for anyone who reaches the socket.
        #expect(try await served.curl("/healthz", as: asNobody()).status == 200)
        #expect(try await served.curl("/v1/status", as: asNobody()).status == 200)

        let reader = try await served.curl("/v1/key", as: asNobody(groups: [Self.readerGroup]))
        #expect(reader.status == 200 && reader.body == Data(Self.key.utf8))
        #expect(try await served.curl("/v1/check", method: "POST", as: asNobody(groups: [Self.readerGroup])).status == 403)
        #expect(try await served.curl("/v1/history", as: asNobody(groups: [Self.readerGroup])).status == 403)

        let admin = try await served.curl("/v1/history", as: asNobody(groups: [Self.adminGroup]))
        #expect(admin.status == 200)
        #expect(try await served.curl("/v1/key", as: asNobody(groups: [Self.adminGroup])).status == 200, "admins may read")
        #expect(await served.finish() == 0)
    }

    @Test(
        "socket files: mode from sockets.mode and the readers' group; with 0660 an outsider cannot even connect",
        .enabled(if: canDropToNobody && haveCurl, "needs root, setpriv and curl"))
    func socketFiles() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key], access: Self.access)
        chmod(served.dir.file("run"), 0o755)
        for path in [served.api, served.credential] {
            var info = stat()
            #expect(lstat(path, &info) == 0)
            #expect(info.st_mode & S_IFMT == S_IFSOCK)
            #expect(info.st_mode & 0o777 == 0o660)
            #expect(info.st_gid == Self.readerGroup)
        }
        try await served.activate(Self.key)
        let outsider = try await runCommand(asNobody() + ["/usr/bin/curl", "-sS", "--unix-socket", served.api, "http://localhost/v1/key"])
        #expect(outsider.status != 0)
        #expect(outsider.stderr.contains("Permission denied") || outsider.stderr.contains("Couldn't connect"))
        let member = try await served.curl("/v1/key", as: asNobody(groups: [Self.readerGroup]))
        #expect(member.status == 200)
        #expect(await served.finish() == 0)
        #expect(!FileManager.default.fileExists(atPath: served.api), "a socket it bound is removed at exit")
    }

    @Test(
        "credential.sock: socat prints the key; a uid on no list gets nothing and ACCESS_DENIED",
        .enabled(if: canDropToNobody && haveSocat, "needs root, setpriv and socat"))
    func rawSocket() async throws {
        let served = try await openToEveryone()
        let printed = try await runCommand(["/usr/bin/socat", "-", "UNIX-CONNECT:" + served.credential])
        #expect(printed.status == 0)
        #expect(printed.stdout == Data(Self.key.utf8))

        let reader = try await runCommand(asNobody(groups: [Self.readerGroup]) + ["/usr/bin/socat", "-", "UNIX-CONNECT:" + served.credential])
        #expect(reader.stdout == Data(Self.key.utf8))

        let refused = try await runCommand(asNobody() + ["/usr/bin/socat", "-", "UNIX-CONNECT:" + served.credential])
        #expect(refused.stdout.isEmpty)
        #expect(try await served.logged("request=\"the key on credential.sock\""))
        #expect(!served.daemon.output.contains(Self.key))
        #expect(await served.finish() == 0)
    }

    @Test("credential.sock and systemd's LoadCredential= address: access.units decides, the unit is logged")
    func unitAddress() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key], access: Self.access)
        try await served.activate(Self.key)

        let allowed = try UnixClient(path: served.credential, abstractName: "3f1a9c0d2b4e5f60/unit/allowed.service/recotap-api-key")
        #expect(try await allowed.read().data == Array(Self.key.utf8))
        #expect(try await served.logged("peer.unit=allowed.service"))

        // Root, but for a unit not on the list: the unit decides.
        let other = try UnixClient(path: served.credential, abstractName: "77aa00ff11ee22dd/unit/other.service/recotap-api-key")
        let answer = try await other.read()
        #expect(answer.closed && answer.data.isEmpty)
        #expect(try await eventually {
            served.daemon.output.contains("event=ACCESS_DENIED") && served.daemon.output.contains("peer.unit=other.service")
        })
        #expect(served.daemon.output.contains("refused unit other.service"))
        #expect(await served.finish() == 0)
    }

    @Test(
        "a non-root peer claiming an allowed unit's address is judged by its uid alone: nobody gets nothing",
        .enabled(if: canDropToNobody && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "needs root, setpriv and python3"))
    func forgedUnitAddress() async throws {
        let served = try await openToEveryone()
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind("\\0forged/unit/allowed.service/recotap-api-key")
            s.connect(sys.argv[1])
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            sys.stdout.write(data.decode())
            """
        let forged = try await runCommand(asNobody() + ["/usr/bin/python3", "-c", script, served.credential])
        #expect(forged.status == 0, "\(forged.stderr)")
        #expect(forged.stdout.isEmpty, "the key went to a forged unit address")
        #expect(try await served.logged("refused uid 65534"))
        #expect(!served.daemon.output.contains("peer.unit=allowed.service"))
        // The same address from root is systemd's.
        let root = try await runCommand(["/usr/bin/python3", "-c", script, served.credential])
        #expect(root.stdout == Data(Self.key.utf8))
        #expect(await served.finish() == 0)
    }

    @Test("credential.sock with no key, or a dead one: closed without data, and the refusal logged")
    func rawSocketWithoutUsableKey() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key], access: Self.access)
        let empty = try UnixClient(path: served.credential)
        let nothing = try await empty.read()
        #expect(nothing.closed && nothing.data.isEmpty)
        #expect(try await served.logged("there is no key yet: closed without data"))

        try await served.activate(Self.key)
        served.mock.regenerate()
        _ = try await served.curl("/v1/check", method: "POST")
        _ = try await served.curl("/v1/check", method: "POST")
        #expect(try await served.curl("/v1/key").status == 503)
        let dead = try await UnixClient(path: served.credential).read()
        #expect(dead.closed && dead.data.isEmpty)
        #expect(try await served.logged("is known invalid: closed without data"))
        #expect(await served.finish() == 0)
    }
}
