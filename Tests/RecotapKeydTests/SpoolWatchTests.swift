import Foundation
import Logging
import RecotapAPIMock
import Testing

@testable import RecotapKeyd

/// The daemon in-process (real inotify, real store, real API client) against the mock.
private struct WatchHarness {
    let dir: TemporaryDirectory
    let mock: MockRecotapAPI
    let daemon: KeydDaemon
    let running: Task<Void, any Error>
    let capture = Capture()
    var spool: String { daemon.configuration.spool.directory }

    init(
        validKeys: [APIKey] = [], client: (any KeyCheckingClient)? = nil,
        prepare: (TemporaryDirectory) throws -> Void = { _ in }
    ) async throws {
        dir = try TemporaryDirectory()
        mock = try await MockRecotapAPI.start()
        mock.setValidKeys(validKeys.map { $0.revealSecret() })
        try prepare(dir)
        let config = try await ConfigurationLoader(
            filePath: try writeTestConfiguration(in: dir), fileRequired: true, environment: [:],
            flags: ["api.base_url": mock.baseURL, "api.timeout": "2s", "check.backoff_min": "1s", "check.backoff_max": "2s"]
        ).load()
        let capture = self.capture
        let logger = Logger(label: "test") { _ in JournalLogHandler(identifier: "recotap-keyd", level: .info, sink: capture.journal) }
        daemon = try await KeydDaemon.build(
            configuration: config, logger: logger, notifier: capture.notifier, client: client, watchdogInterval: nil)
        let daemon = self.daemon
        running = Task { try await daemon.run() }
        _ = await capture.waitForNotification("READY=1", timeout: .seconds(60))
    }

    func activeFingerprint() async throws -> String? { try await daemon.store.activeKey()?.fingerprint }

    func events(_ event: KeydEvent) -> [[String: String]] { capture.events(event) }

    /// Writes to a hidden name, then renames into place: the way to drop a key.
    func drop(_ name: String, _ content: String) throws {
        let hidden = spool + "/." + name
        try Data(content.utf8).write(to: URL(fileURLWithPath: hidden))
        chmod(hidden, 0o640)
        rename(hidden, spool + "/" + name)
    }

    func stop() async throws {
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
        try await mock.shutdown()
    }
}

@Suite("Spool watching (real inotify, the daemon in-process)", .serialized)
struct SpoolWatchTests {
    @Test("a key renamed into the spool is picked up, verified and activated")
    func renameIntoSpool() async throws {
        let h = try await WatchHarness()
        let key = APIKey(secret: "rtk_watch_renamed_key_0001")
        h.mock.addValidKey(key.revealSecret())
        try h.drop("new.key", key.revealSecret() + "\n")
        #expect(try await eventually { try await h.activeFingerprint() == key.fingerprint })
        #expect(try await eventually { !FileManager.default.fileExists(atPath: h.spool + "/new.key") })
        #expect(try await eventually { h.events(.keyActivated).count == 1 })
        #expect(try await eventually { h.capture.notifications.contains { $0.hasPrefix("STATUS=key \(key.fingerprint) valid") } })
        try await h.stop()
    }

    @Test("a file written slowly in several writes is read once, whole")
    func slowWriter() async throws {
        let h = try await WatchHarness()
        let key = APIKey(secret: "rtk_watch_slowly_written_key_000042")
        h.mock.addValidKey(key.revealSecret())
        let path = h.spool + "/slow.key"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o640)
        #expect(fd >= 0)
        let secret = Array((key.revealSecret() + "\n").utf8)
        for chunk in stride(from: 0, to: secret.count, by: 8) {
            _ = secret[chunk..<min(chunk + 8, secret.count)].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            try await Task.sleep(for: .milliseconds(60))
        }
        close(fd)
        #expect(try await eventually { try await h.activeFingerprint() == key.fingerprint })
        try await Task.sleep(for: .milliseconds(200))
        #expect(h.events(.spoolRejected).isEmpty, "never judged half-written")
        #expect(h.mock.requests().count == 1, "read once")
        try await h.stop()
    }

    @Test("a FIFO does not block the daemon, and a symlink out of the spool is refused on sight")
    func fifoAndSymlink() async throws {
        let h = try await WatchHarness()
        mkfifo(h.spool + "/pipe.key", 0o640)
        #expect(try await eventually { h.events(.spoolRejected).count == 1 })
        let outside = try h.dir.write("outside.key", "rtk_outside_readable_key_1\n")
        symlink(outside, h.spool + "/evil.key")
        #expect(try await eventually { h.events(.spoolRejected).count == 2 })
        #expect(h.events(.spoolRejected).map { $0["RECOTAP_SPOOL_FILE"] } == ["pipe.key", "evil.key"])
        let key = APIKey(secret: "rtk_after_the_fifo_key_001")
        h.mock.addValidKey(key.revealSecret())
        try h.drop("good.key", key.revealSecret())
        #expect(try await eventually { try await h.activeFingerprint() == key.fingerprint })
        try await h.stop()
    }

    @Test("files left while the daemon was down are processed at start, oldest first")
    func presentAtStart() async throws {
        let first = APIKey(secret: "rtk_waiting_at_start_first")
        let second = APIKey(secret: "rtk_waiting_at_start_second")
        let h = try await WatchHarness(validKeys: [first, second]) { dir in
            let spool = dir.file("spool")
            try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
            chmod(spool, 0o2770)
            for (index, key) in [first, second].enumerated() {
                let path = spool + "/\(index == 0 ? "b" : "a").key"
                try Data(key.revealSecret().utf8).write(to: URL(fileURLWithPath: path))
                var times = [timespec(tv_sec: 1_700_000_000 + index, tv_nsec: 0), timespec(tv_sec: 1_700_000_000 + index, tv_nsec: 0)]
                utimensat(AT_FDCWD, path, &times, 0)
            }
        }
        #expect(try await eventually { h.events(.keyActivated).count == 2 })
        #expect(h.events(.keyActivated).map { $0["RECOTAP_SPOOL_FILE"] } == ["b.key", "a.key"], "oldest first")
        #expect(try await h.activeFingerprint() == second.fingerprint, "the last good one wins")
        #expect((try FileManager.default.contentsOfDirectory(atPath: h.spool)).sorted() == ["rejected"])
        try await h.stop()
    }

    @Test("with the API down the new key is activated unverified, and verified when the API is back")
    func apiDownThenBack() async throws {
        let h = try await WatchHarness()
        let key = APIKey(secret: "rtk_activated_while_down_01")
        h.mock.addValidKey(key.revealSecret())
        h.mock.inject(MockFault(kind: .status, status: 503, count: 0))
        try h.drop("new.key", key.revealSecret())
        #expect(try await eventually { try await h.activeFingerprint() == key.fingerprint })
        #expect(try await h.daemon.store.activeKey()?.state == .unverified)
        h.mock.clearFaults()
        #expect(try await eventually(timeout: .seconds(15)) { try await h.daemon.store.activeKey()?.state == .valid })
        try await h.stop()
    }

    @Test("when the kernel's event queue overflows, the directory is rescanned and nothing is lost")
    func queueOverflow() async throws {
        let client = ScriptedClient(clock: SystemSchedulerClock())
        let h = try await WatchHarness(client: client)
        let first = APIKey(secret: "rtk_before_the_overflow_01")
        let second = APIKey(secret: "rtk_lost_in_the_overflow_02")
        client.hold()  // the intake stays busy verifying the first key
        try h.drop("first.key", first.revealSecret())
        #expect(try await eventually { client.calls.count == 1 })
        // Meanwhile: far more events than the kernel's queue (16384 by default) and
        // SwiftNIO's read-ahead together hold; the second key's event is among the lost.
        let limit = Int((try? String(contentsOfFile: "/proc/sys/fs/inotify/max_queued_events", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "16384") ?? 16384
        for index in 0..<(limit * 3) {
            let fd = open(h.spool + "/.noise-\(index)", O_WRONLY | O_CREAT, 0o640)
            close(fd)
        }
        try h.drop("second.key", second.revealSecret())
        client.release()
        #expect(try await eventually(timeout: .seconds(30)) { try await h.activeFingerprint() == second.fingerprint })
        #expect(h.capture.journalEntries.contains { $0.contains(JournalField("MESSAGE", "inotify queue overflowed: rescanning the spool directory")) })
        try await h.stop()
    }
}
