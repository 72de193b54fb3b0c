import Foundation
import Testing

@testable import RecotapKeyd

/// README "Consumers": the generation file, `recotap-keyctl verify-credential` and
/// `recotap-keyctl restart-consumer` (with a stand-in for systemctl), real binaries.
@Suite("Consumers (real binaries)", .enabled(if: haveCurl, "needs curl"))
struct ConsumerTests {
    static let key = "rtk_consumer_test_key_0123456"
    static let next = "rtk_consumer_test_next_987654"
    static let backslashed = #"rtk_consumer\test\key_0001"#

    private func keyctl(_ arguments: [String], environment: [String: String] = [:]) async throws -> CommandResult {
        try await runCommand(["/usr/bin/env"] + environment.map { "\($0)=\($1)" } + [productsDirectory + "/recotap-keyctl"] + arguments)
    }

    @Test("the generation file follows every committed change of the key or its state, atomically, mode 0644, never holding the key")
    func generationFile() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key, Self.next], extra: "check:\n  confirm_delay: 1s\n  report_min_interval: 0s")
        let file = GenerationFile(path: served.dir.file("run/generation"))
        #expect(try await eventually(timeout: .seconds(5)) { file.read()?.state == "none" })
        #expect(file.read()?.version == 0)

        try await served.activate(Self.key)
        #expect(try await eventually(timeout: .seconds(5)) { file.read()?.version == 1 })
        #expect(file.read()?.fingerprint == APIKey.fingerprint(of: Self.key))
        #expect(file.read()?.state == "valid")
        var info = stat()
        #expect(lstat(file.path, &info) == 0 && info.st_mode & 0o777 == 0o644)

        try await served.activate(Self.next)
        #expect(try await eventually(timeout: .seconds(5)) { file.read()?.version == 2 })
        served.mock.setValidKeys([])
        _ = try await served.curl("/v1/check", method: "POST")
        #expect(try await eventually(timeout: .seconds(5)) { file.read()?.state == "invalid" })
        #expect(file.read()?.version == 2)
        let text = try String(contentsOfFile: file.path, encoding: .utf8)
        #expect(!text.contains(Self.key) && !text.contains(Self.next))
        #expect(text.hasPrefix("# recotap-keyd"))
        #expect(!FileManager.default.fileExists(atPath: file.path + ".tmp"))
        #expect(await served.finish() == 0)
    }

    @Test("verify-credential: missing or empty (3), not a key (1), the active key (0), a key recotap-keyd knows to be invalid (4); never the key on its output")
    func verifyCredential() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key], extra: "check:\n  confirm_delay: 1s\n  report_min_interval: 0s")
        try await served.activate(Self.key)
        let credentials = try TemporaryDirectory()
        let environment = ["CREDENTIALS_DIRECTORY": credentials.path]
        let arguments = ["verify-credential", "recotap-api-key", "--socket", served.api]

        let missing = try await keyctl(arguments, environment: environment)
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("credential recotap-api-key is missing"))
        try credentials.write("recotap-api-key", "")
        let empty = try await keyctl(arguments, environment: environment)
        #expect(empty.status == 3)
        #expect(empty.stderr.contains("credential recotap-api-key is empty"))
        try credentials.write("recotap-api-key", "two words")
        #expect(try await keyctl(arguments, environment: environment).status == 1)

        try credentials.write("recotap-api-key", Self.key)
        let good = try await keyctl(arguments, environment: environment)
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.output.contains("the active one (valid)"))

        served.mock.setValidKeys([])
        _ = try await served.curl("/v1/check", method: "POST")
        let dead = try await keyctl(arguments, environment: environment)
        #expect(dead.status == 4)
        #expect(dead.stderr.contains("which recotap-keyd knows to be invalid"))
        for result in [missing, empty, good, dead] {
            #expect(!result.output.contains(Self.key) && !result.stderr.contains(Self.key))
        }
        #expect(await served.finish() == 0)
    }

    @Test("restart-consumer: only a valid key restarts, once per version, no sooner than the minimum delay; a failed restart says so")
    func restartConsumer() async throws {
        let dir = try TemporaryDirectory()
        let calls = dir.file("calls")
        let fake = try dir.write("systemctl", "#!/bin/sh\necho \"$@\" >> \(calls)\nexit ${FAKE_STATUS:-0}\n")
        chmod(fake, 0o755)
        let file = GenerationFile(path: dir.file("generation"))
        let arguments = [
            "restart-consumer", "billing.service", "--generation-file", file.path, "--state-directory", dir.path,
            "--systemctl", fake, "--delay-min", "1s", "--delay-max", "1200ms",
        ]
        func called() -> [String] {
            ((try? String(contentsOfFile: calls, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        try file.write(.init(version: 3, fingerprint: "aaaaaaaaaaaa", state: "invalid", changedAt: Date()))
        #expect(try await keyctl(arguments).status == 0)
        try file.write(.init(version: 4, fingerprint: "bbbbbbbbbbbb", state: "unverified", changedAt: Date()))
        #expect(try await keyctl(arguments).status == 0)
        #expect(called().isEmpty, "an invalid or unverified key restarts nothing")

        try file.write(.init(version: 4, fingerprint: "bbbbbbbbbbbb", state: "valid", changedAt: Date()))
        let started = ContinuousClock.now
        let restarted = try await keyctl(arguments)
        let took = ContinuousClock.now - started
        #expect(restarted.status == 0, "\(restarted.stderr)")
        #expect(called() == ["try-restart billing.service"])
        #expect(took >= .seconds(1), "no sooner than --delay-min (took \(took))")
        #expect(restarted.stderr.contains("event=CONSUMER_RESTARTED"))
        #expect(restarted.stderr.contains("result=done"))
        #expect(try String(contentsOfFile: dir.file("billing.service.version"), encoding: .utf8) == "4\n")

        #expect(try await keyctl(arguments).status == 0)
        #expect(called().count == 1, "once per version")

        try file.write(.init(version: 5, fingerprint: "cccccccccccc", state: "valid", changedAt: Date()))
        let failed = try await keyctl(arguments + ["--mode", "try-reload-or-restart"], environment: ["FAKE_STATUS": "5"])
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("failed (systemctl exit status 5)"))
        #expect(called().last == "try-reload-or-restart billing.service")
        #expect(try String(contentsOfFile: dir.file("billing.service.version"), encoding: .utf8) == "4\n", "retried next time")

        // The generation file replaced by a symlink (its writer is not root): not followed.
        let target = try dir.write("elsewhere", file.read().map { $0.text.replacingOccurrences(of: "VERSION=5", with: "VERSION=6") } ?? "")
        unlink(file.path)
        symlink(target, file.path)
        #expect(file.read() == nil)
        #expect(try await keyctl(arguments).status == 0)
        #expect(called().count == 2, "nothing run through a symlink")

        let bad = try await keyctl(["restart-consumer", "../etc", "--generation-file", file.path])
        #expect(bad.status == 64)
    }

    /// `recotap-keyctl exec …` running in the background, its output collected.
    private final class Running: @unchecked Sendable {
        let process = Process()
        let out = Pipe()
        let err = Pipe()

        init(_ arguments: [String], in directory: String) throws {
            process.executableURL = URL(fileURLWithPath: productsDirectory + "/recotap-keyctl")
            process.arguments = arguments
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            process.standardOutput = out
            process.standardError = err
            try process.run()
        }

        /// Waits for the exit (at most 30 s); its status, stdout and stderr.
        func finish() async throws -> (Int32, String) {
            // All of it blocks: off the cooperative pool.
            try await offload { [self] in
                let deadline = Date().addingTimeInterval(30)
                while process.isRunning, Date() < deadline { usleep(20_000) }
                if process.isRunning { process.terminate() }
                process.waitUntilExit()
                let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    + String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                return (process.terminationStatus, text)
            }
        }
    }

    private func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test("exec: the child gets the key (environment or 0600 file), is restarted or signalled at a rotation, signals are passed on, its exit status comes back; the key never on exec's output")
    func exec() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key, Self.next, Self.backslashed])
        try await served.activate(Self.key)
        let work = try TemporaryDirectory()

        let quick = try await keyctl([
            "exec", "--socket", served.api, "--env", "API_KEY", "--", "sh", "-c", "test \"$API_KEY\" = \(Self.key) && exit 7",
        ])
        #expect(quick.status == 7, "the child's exit status: \(quick.stderr)")

        // Nothing of recotap-keyctl's but stdin, stdout and stderr reaches the child.
        // (ls itself opens the directory it lists: descriptor 3.)
        let fds = try await keyctl(["exec", "--socket", served.api, "--", "ls", "/proc/self/fd"])
        #expect(fds.status == 0)
        #expect(fds.output.split(separator: "\n") == ["0", "1", "2", "3"], "inherited: \(fds.output)")

        // Restart mode: each start records the version it got.
        let restarting = try Running(
            ["exec", "--socket", served.api, "--", "sh", "-c", "echo \"$RECOTAP_KEY_VERSION $RECOTAP_API_KEY\" >> runs; exec sleep 60"],
            in: work.path)
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("runs")).count == 1 })
        try await served.activate(Self.next)
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("runs")).count == 2 })
        #expect(lines(work.file("runs")) == ["1 \(Self.key)", "2 \(Self.next)"])
        restarting.process.interrupt()  // SIGINT, passed on to the child
        let (restartStatus, restartOutput) = try await restarting.finish()
        #expect(restartStatus == 128 + SIGINT, "the child died of the SIGINT passed on")
        #expect(!restartOutput.contains(Self.key) && !restartOutput.contains(Self.next))

        // Signal mode: the file is rewritten and the child told, not restarted.
        let script = "trap '{ cat key; echo; } >> seen' HUP; trap 'exit 3' TERM; echo up >> starts; while :; do sleep 0.05; done"
        let signalled = try Running(
            ["exec", "--socket", served.api, "--file", work.file("key"), "--on-rotate", "HUP", "--", "sh", "-c", script],
            in: work.path)
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("starts")).count == 1 })
        var info = stat()
        #expect(lstat(work.file("key"), &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try String(contentsOfFile: work.file("key"), encoding: .utf8) == Self.next)
        try await served.activate(Self.key)  // a rotation back: version 3
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("seen")).count == 1 })
        #expect(lines(work.file("seen")) == [Self.key])
        #expect(lines(work.file("starts")).count == 1, "signalled, not restarted")
        // A SIGHUP of its own is passed on, and rotations are still followed after it.
        kill(signalled.process.processIdentifier, SIGHUP)
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("seen")).count == 2 })
        try await served.activate(Self.next)
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("seen")).count == 3 })
        #expect(lines(work.file("seen")).last == Self.next)
        signalled.process.terminate()  // SIGTERM, passed on: the child's trap exits 3
        let (signalStatus, signalOutput) = try await signalled.finish()
        #expect(signalStatus == 3)
        #expect(!signalOutput.contains(Self.key) && !signalOutput.contains(Self.next))

        // A child that ignores SIGTERM is killed after --stop-timeout at a restart.
        let stubborn = try Running(
            ["exec", "--socket", served.api, "--stop-timeout", "0.5", "--", "sh", "-c",
             "trap '' TERM; echo \"$RECOTAP_KEY_VERSION\" >> stubborn; while :; do sleep 0.05; done"],
            in: work.path)
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("stubborn")).count == 1 })
        try await served.activate(Self.key)
        #expect(try await eventually(timeout: .seconds(10)) { self.lines(work.file("stubborn")).count == 2 })
        stubborn.process.interrupt()
        let (stubbornStatus, _) = try await stubborn.finish()
        #expect(stubbornStatus == 128 + SIGINT)

        // A key with a backslash reaches the child exactly (no escaping meant for a terminal).
        try await served.activate(Self.backslashed)
        let exact = try await keyctl(["exec", "--socket", served.api, "--file", work.file("exact"), "--", "true"])
        #expect(exact.status == 0)
        #expect(try String(contentsOfFile: work.file("exact"), encoding: .utf8) == Self.backslashed)

        let usage = try await keyctl(["exec", "--socket", served.api, "--on-rotate", "HUP", "--", "true"])
        #expect(usage.status == 64, "a signal without --file: the child could not see the new key")
        #expect(await served.finish() == 0)
    }
}
