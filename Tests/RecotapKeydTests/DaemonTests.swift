import Foundation
import Logging
import Synchronization
import Testing

@testable import RecotapKeyd

/// Collects `sd_notify` messages sent through an in-process notifier.
private final class Notifications: Sendable {
    private let messages = Mutex<[String]>([])
    var all: [String] { messages.withLock { $0 } }
    var notifier: SystemdNotifier { SystemdNotifier { message in self.messages.withLock { $0.append(message) }; return true } }

    func waitFor(_ assignment: String, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if all.contains(where: { $0.split(separator: "\n").contains(Substring(assignment)) }) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}

@Suite("Daemon builder")
struct DaemonTests {
    private func configuration(in dir: TemporaryDirectory) async throws -> KeydConfiguration {
        try await ConfigurationLoader(
            filePath: try writeTestConfiguration(in: dir), fileRequired: true, environment: [:]
        ).load()
    }

    /// Builds the daemon with a capturing journal and notifier, and runs it.
    private func start(_ config: KeydConfiguration) throws -> (KeydDaemon, Task<Void, any Error>, Capture, Notifications) {
        let capture = Capture()
        let logger = Logger(label: "test") { _ in
            JournalLogHandler(identifier: "recotap-keyd", level: .info, sink: capture.journal)
        }
        let notifications = Notifications()
        let daemon = try KeydDaemon.build(configuration: config, logger: logger, notifier: notifications.notifier)
        return (daemon, Task { try await daemon.run() }, capture, notifications)
    }

    @Test("the builder's service group becomes ready, reports no key, and stops on graceful shutdown")
    func readyAndGracefulShutdown() async throws {
        let dir = try TemporaryDirectory()
        let config = try await configuration(in: dir)
        let (daemon, running, capture, notifications) = try start(config)

        #expect(await notifications.waitFor("READY=1"))
        #expect(notifications.all.first == "READY=1\nSTATUS=no key yet: drop one into \(dir.path)/spool")
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
        #expect(notifications.all.last?.hasPrefix("STOPPING=1\n") == true)

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

        let (daemon, running, capture, notifications) = try start(config)
        #expect(await notifications.waitFor("READY=1"))
        #expect(notifications.all.first == "READY=1\nSTATUS=key \(key.fingerprint) not yet verified")
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
        let notifications = Notifications()
        #expect(throws: StoreError.self) {
            _ = try KeydDaemon.build(configuration: config, logger: Logger(label: "test"), notifier: notifications.notifier)
        }
        #expect(notifications.all.isEmpty)
    }

    @Test("STATUS texts", arguments: [
        (KeyState.valid, Optional(40.0), "key 3fa2c1d09e7b valid, checked 40 s ago"),
        (.valid, Optional(600.0), "key 3fa2c1d09e7b valid, checked 10 min ago"),
        (.unverified, nil, "key 3fa2c1d09e7b not yet verified"),
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
