import Foundation
import Logging
import Synchronization
import Testing

@testable import RecotapKeyd

@Suite("Daemon builder")
struct DaemonTests {
    private func configuration(in dir: TemporaryDirectory) async throws -> KeydConfiguration {
        try await ConfigurationLoader(
            filePath: try writeTestConfiguration(in: dir), fileRequired: true, environment: [:]
        ).load()
    }

    /// Builds the daemon with a capturing journal and notifier, and runs it.
    private func start(_ config: KeydConfiguration) async throws -> (KeydDaemon, Task<Void, any Error>, Capture) {
        let capture = Capture()
        let logger = Logger(label: "test") { _ in
            JournalLogHandler(identifier: "recotap-keyd", level: .info, sink: capture.journal)
        }
        let daemon = try await KeydDaemon.build(
            configuration: config, logger: logger, notifier: capture.notifier, client: ScriptedClient(clock: SystemSchedulerClock()))
        return (daemon, Task { try await daemon.run() }, capture)
    }

    @Test("the builder's service group becomes ready, reports no key, and stops on graceful shutdown")
    func readyAndGracefulShutdown() async throws {
        let dir = try TemporaryDirectory()
        let config = try await configuration(in: dir)
        let (daemon, running, capture) = try await start(config)

        #expect(await capture.waitForNotification("READY=1", timeout: .seconds(60)))
        #expect(capture.notifications.first == "READY=1\nSTATUS=no key yet: drop one into \(dir.path)/spool")
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
        #expect(capture.notifications.last?.hasPrefix("STOPPING=1\n") == true)

        let lifecycle = capture.journalEntries.filter { entry in
            entry.contains(JournalField("MESSAGE_ID", KeydEvent.daemonLifecycle.messageID))
        }
        #expect(lifecycle.count == 2, "started and stopping")
        #expect(lifecycle.first?.contains(JournalField("PRIORITY", "6")) == true)
        #expect(lifecycle.first?.contains(JournalField("RECOTAP_STORE_PATH", config.store.path)) == true)
        #expect(capture.journalEntries.contains { $0.contains(JournalField("MESSAGE", "no API key yet: put one into the spool directory")) })
    }

    @Test("with an active key, the start names its fingerprint and version")
    func startWithKey() async throws {
        let dir = try TemporaryDirectory()
        let config = try await configuration(in: dir)
        let key = APIKey(secret: "rtk_builder_test_key_0011223344")
        let store = try KeyStore(path: config.store.path)
        let activation = try await store.addAndActivate(key, source: "test", state: .unverified, at: Date())
        await store.close()

        let (daemon, running, capture) = try await start(config)
        #expect(await capture.waitForNotification("READY=1", timeout: .seconds(60)))
        #expect(capture.notifications.first?.hasPrefix("READY=1\nSTATUS=key \(key.fingerprint) not yet verified; key added ") == true)
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
        let started = try #require(capture.journalEntries.first { $0.contains(JournalField("MESSAGE_ID", KeydEvent.daemonLifecycle.messageID)) })
        #expect(started.contains(JournalField("RECOTAP_KEY_FINGERPRINT", key.fingerprint)))
        #expect(started.contains(JournalField("RECOTAP_KEY_VERSION", String(activation.activated.id))))
        #expect(!capture.everything.contains(key.revealSecret()))
    }

    @Test("an unusable store makes the builder fail, before anything could say READY")
    func unusableStore() async throws {
        let dir = try TemporaryDirectory()
        var config = try await configuration(in: dir)
        try FileManager.default.createDirectory(atPath: dir.file("a-directory"), withIntermediateDirectories: true)
        config.store.path = dir.file("a-directory")
        let capture = Capture()
        await #expect(throws: StoreError.self) {
            _ = try await KeydDaemon.build(configuration: config, logger: Logger(label: "test"), notifier: capture.notifier)
        }
        #expect(capture.notifications.isEmpty)
    }

    @Test("STATUS texts", arguments: [
        (KeyState.valid, Optional(40.0), "key 3fa2c1d09e7b valid, checked 40 s ago; key added 0 s ago"),
        (.valid, Optional(600.0), "key 3fa2c1d09e7b valid, checked 10 min ago; key added 0 s ago"),
        (.unverified, nil, "key 3fa2c1d09e7b not yet verified; key added 0 s ago"),
    ])
    func statusText(_ state: KeyState, _ verifiedSecondsAgo: Double?, _ expected: String) {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let record = KeyRecord(
            id: 3, fingerprint: "3fa2c1d09e7b", key: nil, source: "s", status: .active, state: state, addedAt: now,
            activatedAt: now, retiredAt: nil, retireReason: nil,
            lastVerifiedAt: verifiedSecondsAgo.map { now.addingTimeInterval(-$0) }, invalidSince: nil, secretErasedAt: nil)
        #expect(KeyStatusText.describe(active: record, spoolDirectory: "/spool", now: now) == expected)
        #expect(KeyStatusText.describe(active: nil, spoolDirectory: "/spool", now: now) == "no key yet: drop one into /spool")
    }
}
