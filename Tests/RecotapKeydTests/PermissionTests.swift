import Foundation
import Testing

@testable import RecotapKeyd

private let canDropPrivileges = geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")

@Suite("Spool permissions (the binary as an unprivileged user)", .serialized)
struct PermissionTests {
    /// Root reads everything, so this runs the daemon as `nobody` through setpriv.
    @Test(
        "a file the daemon's user cannot read is refused as permission denied, saying what mode would work",
        .enabled(if: canDropPrivileges, "needs root and setpriv (util-linux) to run the daemon as nobody"))
    func permissionDenied() throws {
        let dir = try TemporaryDirectory()
        chmod(dir.path, 0o755)
        // A copy of the binary where nobody can reach it (the build directory may be
        // under a private directory).
        let binary = dir.file("recotap-keyd")
        try FileManager.default.copyItem(atPath: productsDirectory + "/recotap-keyd", toPath: binary)
        chmod(binary, 0o755)
        let config = try writeTestConfiguration(in: dir)
        for sub in ["spool", "state", "run"] {
            try FileManager.default.createDirectory(atPath: dir.file(sub), withIntermediateDirectories: true)
            chown(dir.file(sub), 65534, 65534)
        }
        chmod(dir.file("spool"), 0o2770)
        chmod(dir.file("state"), 0o700)
        let notify = try NotifySocket(path: dir.file("notify.sock"))
        chmod(notify.path, 0o666)
        let daemon = try DaemonProcess(
            arguments: ["--config", config], environment: ["NOTIFY_SOCKET": notify.path],
            wrapper: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], executable: binary)
        #expect(notify.waitFor("READY=1") != nil, "\(daemon.output)")

        // root's, 0600 from the start (then renamed in): nobody cannot read it.
        let hidden = dir.file("spool/.secret.key")
        let fd = open(hidden, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        _ = Array("rtk_unreadable_by_daemon_01\n".utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        rename(hidden, dir.file("spool/secret.key"))
        let refused = try eventuallySync { daemon.output.contains("event=SPOOL_REJECTED") }
        #expect(refused, "\(daemon.output)")
        #expect(daemon.output.contains("permission denied: the daemon (uid 65534) cannot read it"))
        #expect(daemon.output.contains("mode 0640 and group recotap-key-admin"))
        let rejected = try FileManager.default.contentsOfDirectory(atPath: dir.file("spool/rejected"))
        #expect(rejected.count == 1 && rejected[0].hasSuffix("Z-secret.key"))
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
    }
}
