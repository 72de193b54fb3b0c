import Foundation
import RecotapAPIMock
import Testing

@testable import RecotapKeyd

@Suite("Checking, end to end (the real binary against the mock API)", .serialized)
struct CheckingIntegrationTests {
    static let interval = 10  // seconds: the smallest check.interval allowed
    static let confirmDelay = 1

    /// The daemon binary on a store that already holds `key`, pointed at `mock`.
    private func start(
        key: APIKey, baseURL: String, in dir: TemporaryDirectory, seed: Bool = true
    ) async throws -> (DaemonProcess, NotifySocket) {
        let config = try writeTestConfiguration(in: dir, extra: """
            check:
              interval: \(Self.interval)s
              jitter: 0
              confirm_delay: \(Self.confirmDelay)s
              backoff_min: 1s
              backoff_max: 2s
            """)
        if seed {
            let store = try KeyStore(path: dir.file("state/keyd.sqlite3"))
            try await store.addAndActivate(key, source: "test", state: .unverified, at: Date())
            await store.close()
        }
        let notify = try NotifySocket(path: dir.file("notify.sock"))
        let daemon = try DaemonProcess(
            arguments: ["--config", config, "--api-base-url", baseURL, "--api-timeout", "2s"],
            environment: ["NOTIFY_SOCKET": notify.path])
        return (daemon, notify)
    }

    @Test("pointed at recotap-api-mock: valid at start; after the key is regenerated, KEY_INVALIDATED within interval + confirm_delay")
    func regeneratedKeyIsInvalidated() async throws {
        let key = APIKey(secret: "rtk_e2e_regenerated_key_777")
        let dir = try TemporaryDirectory()
        let mock = try MockProcess(keys: [key.revealSecret()], in: dir)
        let (daemon, notify) = try await start(key: key, baseURL: mock.baseURL, in: dir)

        #expect(notify.waitFor("READY=1") != nil, "no READY=1: \(daemon.output)")
        let validAfter = await waitUntil(timeout: .seconds(15)) { daemon.output.contains("key \(key.fingerprint) verified") }
        #expect(validAfter != nil, "the check at start reports valid: \(daemon.output)")
        #expect(try mock.requests().count == 1)

        try mock.regenerate()
        let invalidatedAfter = await waitUntil(timeout: .seconds(Self.interval + Self.confirmDelay + 5)) {
            daemon.output.contains("event=KEY_INVALIDATED")
        }
        let elapsed = try #require(invalidatedAfter, "no KEY_INVALIDATED: \(daemon.output)")
        #expect(elapsed <= .seconds(Self.interval + Self.confirmDelay + 2))
        let requests = try mock.requests()
        #expect(requests.count == 3, "the start check, the 401, its confirmation")
        #expect(requests.allSatisfy { $0["api_key_fingerprint"] as? String == key.fingerprint && $0["query"] as? String == "limit=1" })

        // A dead key is not checked again.
        try await Task.sleep(for: .seconds(Self.interval + 1))
        #expect(try mock.requests().count == 3)

        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        let output = daemon.output
        #expect(!output.contains(key.revealSecret()))
        #expect(output.contains("key.fingerprint=\(key.fingerprint)"))
        #expect(output.contains("reason=\"Invalid API key\""))
    }

    @Test("an outage — 503s, dropped connections, timeouts — never invalidates: one CHECK_DEGRADED, one CHECK_RECOVERED")
    func outageNeverInvalidates() async throws {
        let key = APIKey(secret: "rtk_e2e_outage_key_000111")
        let mock = try await MockRecotapAPI.start()
        mock.setValidKeys([key.revealSecret()])
        let dir = try TemporaryDirectory()
        let (daemon, notify) = try await start(key: key, baseURL: mock.baseURL, in: dir)
        #expect(notify.waitFor("READY=1") != nil)
        #expect(await waitUntil(timeout: .seconds(15)) { daemon.output.contains("verified: the API accepts it") } != nil)

        mock.inject(.status(503, count: 3))
        mock.inject(.drop(count: 2))
        mock.inject(.delay(milliseconds: 3000, count: 2))
        mock.inject(.status(500, count: 1))
        let recovered = await waitUntil(timeout: .seconds(Self.interval + 30)) {
            daemon.output.contains("event=CHECK_RECOVERED")
        }
        #expect(recovered != nil, "no recovery: \(daemon.output)")
        let output = daemon.output
        #expect(output.components(separatedBy: "event=CHECK_DEGRADED").count - 1 == 1)
        #expect(output.components(separatedBy: "event=CHECK_RECOVERED").count - 1 == 1)
        #expect(!output.contains("KEY_INVALIDATED"))
        #expect(mock.requests().count >= 10, "every failure was retried: \(mock.requests().count)\n\(output)")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        try await mock.shutdown()
    }

    @Test("restarted on a store whose key is known invalid: no request at all")
    func restartWithInvalidKey() async throws {
        let key = APIKey(secret: "rtk_e2e_dead_key_222333444")
        let mock = try await MockRecotapAPI.start()
        let dir = try TemporaryDirectory()
        let store = try KeyStore(path: dir.file("state/keyd.sqlite3"))
        let id = try await store.addAndActivate(key, source: "test", state: .valid, at: Date()).activated.id
        try await store.record(check: CheckRecord(keyID: id, at: Date(), outcome: .invalid, httpStatus: 401, latencyMilliseconds: 5, reason: "Invalid API key"))
        await store.close()
        let (daemon, notify) = try await start(key: key, baseURL: mock.baseURL, in: dir, seed: false)
        let messages = try #require(notify.waitFor("READY=1"))
        #expect(messages.last?.contains("STATUS=key \(key.fingerprint) INVALID since") == true)
        #expect(await waitUntil(timeout: .seconds(5)) { daemon.output.contains("event=KEY_STILL_INVALID") } != nil)
        try await Task.sleep(for: .seconds(2))
        #expect(mock.requests().isEmpty)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        try await mock.shutdown()
    }
}
