import Foundation
import Testing

@testable import RecotapKeyd

private let havePython = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

@Suite("Serving: socket activation and socket files", .serialized)
struct SocketActivationTests {
    static let key = "rtk_activation_key_0123456789"

    private func inode(_ path: String) -> UInt64 {
        var info = stat()
        return lstat(path, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    @Test(
        "descriptors passed as systemd does (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES=api:credential) are used, not rebound, and left in place at exit",
        .enabled(if: havePython && haveCurl, "needs python3 and curl"))
    func inheritedSockets() async throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("run"), withIntermediateDirectories: true)
        let api = dir.file("run/keyd.sock")
        let credential = dir.file("run/credential.sock")
        // ServedDaemon makes its own directory; the launcher binds in this one, and the
        // daemon is pointed here by flags.
        let launcher = ["/usr/bin/python3", repositoryRoot + "/Tests/RecotapKeydTests/Fixtures/activate.py", api, credential]
        let served = try await ServedDaemon(
            validKeys: [Self.key], launcher: launcher,
            environment: ["RECOTAP_KEYD_SOCKETS_API": api, "RECOTAP_KEYD_SOCKETS_CREDENTIAL": credential])
        #expect(served.daemon.output.contains("activate.py: listening"))
        let apiInode = inode(api)
        let credentialInode = inode(credential)
        #expect(apiInode != 0 && credentialInode != 0)
        #expect(!FileManager.default.fileExists(atPath: served.api), "nothing bound at the configured-by-file path")

        _ = try SpoolWriter.write(APIKey(secret: Self.key), into: served.spool)
        #expect(try await eventually { (try? await curl(api, "/v1/key").status) == 200 })
        #expect(try await curl(api, "/v1/key").body == Data(Self.key.utf8))
        #expect(await UnixClientRead(credential) == Self.key)
        #expect(inode(api) == apiInode && inode(credential) == credentialInode, "the daemon used the passed sockets")

        #expect(await served.finish() == 0)
        #expect(inode(api) == apiInode, "systemd's socket file stays for the next activation")
    }

    @Test("a stale socket file is replaced; a live one (another daemon serving) stops the start with a clear message")
    func staleAndLive() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("run/keyd.sock")
        try FileManager.default.createDirectory(atPath: dir.file("run"), withIntermediateDirectories: true)

        // Stale: bound, then the process "died" (closed without unlink).
        let (stale, _) = try ListeningSockets.bind(path: path, mode: 0o660, group: nil)
        close(stale)
        let (fresh, _) = try ListeningSockets.bind(path: path, mode: 0o640, group: nil)
        #expect(fileMode(path) == 0o640)

        // Live: listening on it.
        listen(fresh, 4)
        #expect {
            _ = try ListeningSockets.bind(path: path, mode: 0o660, group: nil)
        } throws: { error in
            "\(error)".contains("another process is already serving on it")
        }
        close(fresh)

        // Not a socket: never deleted.
        let file = try dir.write("run/regular", "data")
        #expect(throws: ServingSetupError.self) { _ = try ListeningSockets.bind(path: file, mode: 0o660, group: nil) }
        #expect(FileManager.default.fileExists(atPath: file))

        let long = dir.file(String(repeating: "x", count: 120))
        #expect { _ = try ListeningSockets.bind(path: long, mode: 0o660, group: nil) } throws: { error in
            "\(error)".contains("bytes long")
        }
    }

    @Test("passed sockets without names are matched by their path; one matching nothing stops the start, saying how to fix it")
    func unnamedSockets() throws {
        let dir = try TemporaryDirectory()
        let config = KeydConfiguration.Sockets(api: dir.file("a.sock"), credential: dir.file("c.sock"), mode: 0o660)
        // As one socket unit with two ListenStream= lines passes them: both named after the unit.
        let (apiFD, _) = try ListeningSockets.bind(path: config.api, mode: 0o660, group: nil)
        let (credentialFD, _) = try ListeningSockets.bind(path: config.credential, mode: 0o660, group: nil)
        let sockets = try ListeningSockets.open(
            sockets: config, group: nil,
            inherited: [.init(name: "recotap-keyd.socket", descriptor: credentialFD), .init(name: "recotap-keyd.socket", descriptor: apiFD)])
        #expect(sockets.api.descriptor == apiFD && sockets.api.origin == .inherited)
        #expect(sockets.credential.descriptor == credentialFD)

        let (strayFD, _) = try ListeningSockets.bind(path: dir.file("other.sock"), mode: 0o660, group: nil)
        #expect {
            _ = try ListeningSockets.open(
                sockets: config, group: nil,
                inherited: [.init(name: "api", descriptor: apiFD), .init(name: "recotap-keyd.socket", descriptor: strayFD)])
        } throws: { error in
            "\(error)".contains("FileDescriptorName=api")
        }
        for fd in [apiFD, credentialFD, strayFD] { close(fd) }
    }

    @Test("the real binary refuses to start next to a running one, with exit 78 and the reason")
    func secondDaemon() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        let config = served.dir.file("keyd.yaml")
        let second = try DaemonProcess(arguments: ["--config", config, "--store-path", served.dir.file("other/keyd.sqlite3")], environment: [:])
        #expect(second.waitForExit() == 78)
        #expect(second.output.contains("another process is already serving on it"))
        #expect(try await curl(served.api, "/healthz").status == 503, "the first one still answers")
        #expect(await served.finish() == 0)
    }
}

/// What credential.sock hands out, read to the end.
func UnixClientRead(_ path: String) async -> String? {
    guard let client = try? UnixClient(path: path) else { return nil }
    return try? await client.text()
}
