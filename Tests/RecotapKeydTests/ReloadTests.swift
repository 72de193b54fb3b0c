import Foundation
import Testing

@testable import RecotapKeyd

@Suite("SIGHUP reload (real binary)", .enabled(if: haveCurl, "needs curl"))
struct ReloadTests {
    static let key = "rtk_reload_key_0123456789"

    @Test("SIGHUP applies a changed check.interval (the next check comes forward), RELOADING=1 then READY=1; a broken file is refused and the daemon keeps running")
    func reload() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key], extra: "check:\n  interval: 1h\n  jitter: 0")
        try await served.activate(Self.key)
        let before = try #require(try await served.curl("/v1/status").json?["next_check"]?.string.flatMap { try? Date($0, strategy: .iso8601) })
        #expect(before.timeIntervalSinceNow > 3000)

        let config = served.dir.file("keyd.yaml")
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(of: "interval: 1h", with: "interval: 10s").write(toFile: config, atomically: true, encoding: .utf8)
        served.daemon.signal(SIGHUP)
        #expect(try await served.logged("configuration reloaded: check in force"))
        let after = try #require(try await served.curl("/v1/status").json?["next_check"]?.string.flatMap { try? Date($0, strategy: .iso8601) })
        #expect(after.timeIntervalSinceNow <= 11, "next check \(after) after the reload")
        let notifications = try await offload { [notify = served.notify] in notify.waitFor("READY=1", timeout: .seconds(5)) ?? [] }
        #expect(notifications.contains { $0.contains("RELOADING=1") && $0.contains("MONOTONIC_USEC=") })

        // A mistake in the file: refused with the reason, nothing changes, still serving.
        try text.replacingOccurrences(of: "interval: 1h", with: "interval: 1s").write(toFile: config, atomically: true, encoding: .utf8)
        served.daemon.signal(SIGHUP)
        #expect(try await served.logged("reload refused, the running configuration stays"))
        #expect(served.daemon.output.contains("check.interval"))
        #expect(try await served.curl("/v1/key").status == 200)

        // A path change waits for a restart.
        try text.replacingOccurrences(of: "spool\n", with: "elsewhere\n").write(toFile: config, atomically: true, encoding: .utf8)
        served.daemon.signal(SIGHUP)
        #expect(try await served.logged("changes to spool take effect at the next restart"))
        #expect(await served.finish() == 0)
    }
}
