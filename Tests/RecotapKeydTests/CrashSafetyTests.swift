import Foundation
import RecotapAPIMock
import Testing

@testable import RecotapKeyd

@Suite("Crash safety (the real binary, SIGKILL at random moments)", .serialized)
struct CrashSafetyTests {
    @Test("50 rounds of drop-a-key, SIGKILL, restart: always exactly one active key, the newest processed, integrity ok")
    func killDuringIntake() async throws {
        let dir = try TemporaryDirectory()
        let mock = try await MockRecotapAPI.start()
        let config = try writeTestConfiguration(in: dir, extra: "check:\n  interval: 1h\n")
        let database = dir.file("state/keyd.sqlite3")
        let spool = dir.file("spool")

        func start(_ round: Int) throws -> DaemonProcess {
            let notify = try NotifySocket(path: dir.file("notify-\(round).sock"))
            let daemon = try DaemonProcess(
                arguments: ["--config", config, "--api-base-url", mock.baseURL, "--api-timeout", "2s"],
                environment: ["NOTIFY_SOCKET": notify.path])
            guard notify.waitFor("READY=1", timeout: .seconds(30)) != nil else {
                throw TestHTTPError.malformed("round \(round): no READY=1: \(daemon.output)")
            }
            return daemon
        }
        func pending() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).filter { SpoolDirectory.isCandidate($0) }
        }

        var daemon = try start(-1)
        var dropped: [APIKey] = []
        var killedBeforeRemoval = 0
        for round in 0..<50 {
            let key = APIKey(secret: "rtk_crash_round_\(round)_\(UUID().uuidString.prefix(8))")
            mock.addValidKey(key.revealSecret())
            dropped.append(key)
            let hidden = spool + "/.round-\(round).key"
            try Data(key.revealSecret().utf8).write(to: URL(fileURLWithPath: hidden))
            chmod(hidden, 0o640)
            rename(hidden, spool + "/round-\(round).key")
            usleep(UInt32.random(in: 0...15_000))
            daemon.signal(SIGKILL)
            _ = daemon.waitForExit()
            if !pending().isEmpty { killedBeforeRemoval += 1 }

            daemon = try start(round)
            // Every file left is processed at the restart.
            let processed = try await eventually(timeout: .seconds(10)) { pending().isEmpty }
            #expect(processed, "round \(round): files left after restart: \(pending())")

            let active = rawSQL(database, "SELECT fingerprint FROM keys WHERE status = 'active'")
            #expect(active.count == 1, "round \(round): \(active.count) active keys")
            #expect(dropped.map(\.fingerprint).contains(active.first ?? ""), "round \(round): active key is one dropped so far")
            #expect(active.first == key.fingerprint, "round \(round): the newest key whose file is gone is active")
            #expect(rawSQL(database, "PRAGMA integrity_check") == ["ok"], "round \(round)")
        }
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        #expect(!daemon.output.contains("rtk_crash_round_"), "no key in the output")
        // Not an assertion on timing, a sanity check that the test exercised something:
        // some kills landed before the file was gone.
        print("crash safety: \(killedBeforeRemoval) of 50 kills left the file for the restart")
        try await mock.shutdown()
    }
}
