import Foundation
import Testing

@testable import RecotapKeyd

@Suite("Lifecycle (the real recotap-keyd binary)", .serialized)
struct LifecycleTests {
    /// The binary on a test configuration in `dir`, with a notify socket there.
    private func start(in dir: TemporaryDirectory, arguments: [String] = []) throws -> (DaemonProcess, NotifySocket) {
        let config = try writeTestConfiguration(in: dir)
        let notify = try NotifySocket(path: dir.file("notify.sock"))
        let daemon = try DaemonProcess(arguments: ["--config", config] + arguments, environment: ["NOTIFY_SOCKET": notify.path])
        return (daemon, notify)
    }

    @Test("starts, says READY=1 with a no-key STATUS, and exits 0 with STOPPING=1 on SIGTERM")
    func readyAndStop() throws {
        let dir = try TemporaryDirectory()
        let (daemon, notify) = try start(in: dir)

        let untilReady = try #require(notify.waitFor("READY=1"), "no READY=1; output:\n\(daemon.output)")
        let readyMessage = try #require(untilReady.last)
        #expect(readyMessage.contains("STATUS=no key yet: drop one into \(dir.path)/spool"))
        #expect(fileMode(dir.file("state/keyd.sqlite3")) == 0o600, "READY=1 only once the store is open")

        daemon.signal(SIGTERM)
        #expect(notify.waitFor("STOPPING=1", timeout: .seconds(30)) != nil)
        #expect(daemon.waitForExit() == 0)
        #expect(daemon.process.terminationReason == .exit)
        let output = daemon.output
        #expect(output.contains("event=DAEMON_LIFECYCLE"))
        #expect(output.contains("no API key yet"))
        #expect(output.contains("recotap-keyd stopping"))
    }

    @Test("SIGINT also shuts down gracefully")
    func sigint() throws {
        let dir = try TemporaryDirectory()
        let (daemon, notify) = try start(in: dir)
        #expect(notify.waitFor("READY=1") != nil)
        daemon.signal(SIGINT)
        #expect(daemon.waitForExit() == 0)
    }

    @Test("with a key in the store, STATUS names its fingerprint and the output never its secret")
    func statusWithKey() async throws {
        let dir = try TemporaryDirectory()
        let secret = "rtk_lifecycle_secret_5f4e3d2c1b0a"
        let store = try KeyStore(path: dir.file("state/keyd.sqlite3"))
        try await store.addAndActivate(APIKey(secret: secret), source: "test", state: .valid, at: Date())
        await store.close()

        let (daemon, notify) = try start(in: dir, arguments: ["--log-level", "trace"])
        let messages = try #require(notify.waitFor("READY=1"))
        let fingerprint = APIKey(secret: secret).fingerprint
        #expect(messages.last?.contains("STATUS=key \(fingerprint) valid, checked") == true)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        #expect(!daemon.output.contains(secret))
        #expect(daemon.output.contains(fingerprint))
    }

    @Test("an unusable store stops the start before READY=1, with an error naming the file")
    func unusableStore() throws {
        let dir = try TemporaryDirectory()
        try dir.write("state/keyd.sqlite3", String(repeating: "garbage ", count: 1000))
        let (daemon, notify) = try start(in: dir)
        let status = daemon.waitForExit()
        #expect(status != 0)
        #expect(notify.receive(timeout: .seconds(1))?.contains("READY=1") != true)
        #expect(daemon.output.contains("state/keyd.sqlite3"))
    }

    @Test("an unusable api.ca_file stops the start with 78, naming the key, before READY=1")
    func badCAFile() throws {
        let dir = try TemporaryDirectory()
        let ca = try dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        let (daemon, notify) = try start(in: dir, arguments: ["--api-ca-file", ca])
        #expect(daemon.waitForExit() == 78)
        #expect(notify.receive(timeout: .milliseconds(200)) == nil)
        #expect(daemon.output.contains("api.ca_file"))
    }

    @Test("a world-writable spool directory stops the start with 78 before READY=1")
    func unsafeSpool() throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("spool"), withIntermediateDirectories: true)
        chmod(dir.file("spool"), 0o777)
        let (daemon, notify) = try start(in: dir)
        #expect(daemon.waitForExit() == 78)
        #expect(notify.receive(timeout: .milliseconds(200)) == nil)
        #expect(daemon.output.contains("world-writable"))
    }

    @Test("--check-config exits 0 for a good file and 78 naming the key for a bad one")
    func checkConfig() throws {
        let dir = try TemporaryDirectory()
        let good = try writeTestConfiguration(in: dir)
        let ok = try DaemonProcess(arguments: ["--config", good, "--check-config"], environment: [:])
        #expect(ok.waitForExit() == 0)
        #expect(ok.output.contains("is valid"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("state")), "--check-config touches nothing")

        let bad = try dir.write("bad.yaml", "check:\n  jitter: 3\n")
        let refused = try DaemonProcess(arguments: ["--config", bad, "--check-config"], environment: [:])
        #expect(refused.waitForExit() == 78)
        #expect(refused.output.contains("check.jitter"))
        #expect(refused.output.contains("allowed 0.0 to 0.5"))

        let overridden = try DaemonProcess(
            arguments: ["--config", good, "--check-config"], environment: ["RECOTAP_KEYD_CHECK_INTERVAL": "5"])
        #expect(overridden.waitForExit() == 78)
        #expect(overridden.output.contains("check.interval"))
    }
}
