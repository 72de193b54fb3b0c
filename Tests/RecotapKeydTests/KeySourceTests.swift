import Foundation
import Testing

@testable import RecotapKeyd

/// The key source command's runner (README "Fleets"): what the command gets and
/// what becomes of what it writes.
@Suite("key source command runner")
struct KeySourceRunnerTests {
    func command(_ script: String, timeout: Duration = .seconds(20), additions: [String] = [], inherited: [String: String] = [:])
        -> KeySourceCommand
    {
        KeySourceCommand(
            arguments: ["/bin/sh", "-c", script],
            environment: KeySourceCommand.environment(additions: additions, inherited: inherited), timeout: timeout)
    }

    @Test("standard output is collected, exit status 0 succeeds")
    func success() async throws {
        let run = try await command("printf 'rtk_source_key_0001\\n'").run()
        #expect(run.termination == .exited(0))
        #expect(run.succeeded)
        #expect(KeyFileContent.parse(run.output) == .key("rtk_source_key_0001"))
        #expect(run.errorSummary(redacting: []) == nil)
    }

    @Test("a non-zero exit status and a signal are reported as such")
    func exitCodes() async throws {
        let failed = try await command("echo 'no such secret' >&2; exit 3").run()
        #expect(failed.termination == .exited(3))
        #expect(!failed.succeeded)
        #expect(failed.describeTermination(timeout: .seconds(1)) == "exit status 3")
        #expect(failed.errorSummary(redacting: []) == "no such secret")
        let killed = try await command("kill -TERM $$").run()
        #expect(killed.termination == .signalled(SIGTERM))
    }

    @Test("a command that outlives source.timeout is killed, its whole run bounded")
    func timeout() async throws {
        let started = ContinuousClock.now
        let run = try await command("sleep 30", timeout: .seconds(1)).run()
        #expect(run.termination == .timedOut)
        #expect(ContinuousClock.now - started < .seconds(15))
        #expect(run.describeTermination(timeout: .seconds(1)).contains("timed out after 1s"))
    }

    @Test("standard output beyond the cap kills the command; standard error beyond its cap is drained and counted")
    func outputCap() async throws {
        let flood = try await command("yes rtk_flood").run()
        #expect(flood.termination == .outputTooLarge)
        #expect(flood.output.count == KeySourceCommand.outputLimit + 1)
        let noisy = try await command("head -c 100000 /dev/zero | tr '\\0' 'e' >&2; echo rtk_after_noise_1").run()
        #expect(noisy.termination == .exited(0))
        #expect(noisy.errorBytes == 100_000)
        #expect(noisy.errorHead.count == KeySourceCommand.errorKept)
        #expect(noisy.errorSummary(redacting: [])?.hasSuffix("(100000 bytes in all)") == true)
    }

    @Test("a key echoed to standard error is redacted, and so is anything key-shaped; control characters are escaped")
    func redaction() async throws {
        let secret = "rtk_echoed_secret_0042"
        let run = try await command(
            "echo \(secret); echo \"using \(secret) for the request\" >&2; printf 'token AKIA1234567890ABCDEFGH\\033[31m\\n' >&2"
        ).run()
        let summary = try #require(run.errorSummary(redacting: []))
        #expect(!summary.contains(secret))
        #expect(!summary.contains("AKIA1234567890ABCDEFGH"))
        #expect(summary.contains("using [redacted] for the request"))
        #expect(summary.contains("\\x1b[31m"))
        // The active key is redacted too, even when the command did not print it to standard output.
        let other = try await command("echo 'old key rtk_active_0099 rejected' >&2; exit 1").run()
        #expect(other.errorSummary(redacting: ["rtk_active_0099"]) == "old key [redacted] rejected")
        // A summary cut at its end may have cut a key: its last word goes, back to whitespace.
        #expect(Redaction.redact("abc defgh", secrets: [], cut: true) == "abc [redacted]")
        #expect(Redaction.redact("abc key!part:rest", secrets: [], cut: true) == "abc [redacted]")
        // A known key JSON-escaped, percent-encoded, or after a BOM on standard output.
        let slashed = "rtk/with+slash=0077"
        #expect(Redaction.redact("{\"key\":\"rtk\\/with+slash=0077\"}", secrets: [slashed], cut: false) == "{\"key\":\"[redacted]\"}")
        #expect(Redaction.redact("key=rtk%2Fwith%2Bslash%3D0077", secrets: [slashed], cut: false) == "key=[redacted]")
        let underscored = "rtk_live/ab+cd=ef"
        #expect(Redaction.redact("k=rtk_live%2Fab%2Bcd%3Def", secrets: [underscored], cut: false) == "k=[redacted]")
        #expect(Redaction.redact("k=rtk%5Flive%2Fab%2Bcd%3Def", secrets: [underscored], cut: false) == "k=[redacted]")
        // A secret inside another: the longer goes whole.
        #expect(Redaction.redact("x rtk_short_key_1_and_more y", secrets: ["rtk_short_key_1", "rtk_short_key_1_and_more"], cut: false) == "x [redacted] y")
        #expect(Redaction.tokens(of: Array("\u{FEFF}rtk_bom_key_0001\n".utf8)) == ["rtk_bom_key_0001"])
    }

    @Test("the timeout holds until the command ends: one that closes its output and lingers is killed, with what it started")
    func lingering() async throws {
        let dir = try TemporaryDirectory()
        let started = ContinuousClock.now
        let run = try await command(
            "sleep 60 & echo $! > '\(dir.file("child"))'; echo rtk_linger_key_0001; exec >&- 2>&-; exec sleep 60",
            timeout: .seconds(1)
        ).run()
        #expect(run.termination == .timedOut)
        #expect(ContinuousClock.now - started < .seconds(15))
        let child = try #require(Int32(String(contentsOfFile: dir.file("child"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(try await eventually(timeout: .seconds(5)) {
            // Gone, or a zombie waiting for its new parent.
            let state = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
            return state == nil || state == "Z"
        }, "the process it started in the background survived the timeout")
    }

    @Test("the environment is minimal: PATH, LANG, the unit's user variables and the configured additions; nothing else of the daemon's")
    func environment() async throws {
        let run = try await command(
            "env", additions: ["AWS_REGION=eu-west-1", "PATH=/opt/aws/bin:/usr/bin:/bin", "VAULT_TOKEN", "NOT_SET_ANYWHERE"],
            inherited: ["HOME": "/var/lib/x", "NOTIFY_SOCKET": "/run/systemd/notify", "LISTEN_FDS": "2", "https_proxy": "http://p:3128", "CREDENTIALS_DIRECTORY": "/run/credentials/x", "VAULT_TOKEN": "hvs.test"]
        ).run()
        let lines = Set(String(decoding: run.output, as: UTF8.self).split(separator: "\n").map(String.init))
            .subtracting(["PWD=" + FileManager.default.currentDirectoryPath])
        #expect(lines == [
            "AWS_REGION=eu-west-1", "PATH=/opt/aws/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/var/lib/x",
            "CREDENTIALS_DIRECTORY=/run/credentials/x", "VAULT_TOKEN=hvs.test",
        ])
    }

    @Test("no descriptor of the daemon reaches the command: only 0, 1 and 2, and standard input is /dev/null")
    func descriptors() async throws {
        // A descriptor opened without close-on-exec, as the test process's own sockets are.
        let leaked = open("/dev/null", O_RDONLY)
        defer { close(leaked) }
        #expect(leaked > 2)
        let run = try await command("ls /proc/$$/fd; readlink /proc/$$/fd/0; cat; echo end").run()
        let lines = String(decoding: run.output, as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(lines == ["0", "1", "2", "/dev/null", "end"], "\(lines)")
    }

    @Test("a program that is not there is a clear error, naming the PATH searched")
    func missing() async throws {
        let command = KeySourceCommand(
            arguments: ["no-such-key-helper"], environment: KeySourceCommand.environment(additions: [], inherited: [:]),
            timeout: .seconds(5))
        await #expect(throws: KeySourceError.self) { try await command.run() }
        do {
            _ = try await command.run()
        } catch {
            #expect(error.message.contains("no-such-key-helper is not an executable file in PATH (/usr/local/sbin:"))
        }
        let absolute = KeySourceCommand(arguments: ["/nonexistent/helper"], environment: [:], timeout: .seconds(5))
        await #expect(throws: KeySourceError.self) { try await absolute.run() }
    }

    @Test("the backoff doubles from check.backoff_min to check.backoff_max, with jitter around it")
    func backoff() {
        let waits = (1...6).map {
            KeySourceService.backoff(failures: $0, min: .seconds(15), max: .seconds(300), jitter: 0, random: 0.5)
        }
        #expect(waits == [.seconds(15), .seconds(30), .seconds(60), .seconds(120), .seconds(240), .seconds(300)])
        #expect(KeySourceService.backoff(failures: 1, min: .seconds(10), max: .seconds(300), jitter: 0.1, random: 0) == .seconds(9))
        #expect(KeySourceService.backoff(failures: 1000, min: .seconds(10), max: .seconds(300), jitter: 0, random: 0) == .seconds(300))
    }

    @Test("source.* keys: an argv list, 0 or 1m to 7d, NAME=VALUE; refusals name the key")
    func configuration() async throws {
        let dir = try TemporaryDirectory()
        func load(_ yaml: String) async throws -> KeydConfiguration {
            let path = try dir.write("keyd.yaml", yaml)
            return try await ConfigurationLoader(filePath: path, fileRequired: true, environment: [:]).load()
        }
        let loaded = try await load(
            "source:\n  command: [aws, secretsmanager, get-secret-value]\n  interval: 1h\n  timeout: 45s\n  environment: [AWS_REGION=eu-west-1]\n")
        #expect(loaded.source.command == ["aws", "secretsmanager", "get-secret-value"])
        #expect(loaded.source.interval == .seconds(3600))
        #expect(loaded.source.timeout == .seconds(45))
        #expect(loaded.source.environment == ["AWS_REGION=eu-west-1"])
        #expect(try await load("source:\n  interval: 0\n").source.interval == nil)
        #expect(try await load("source:\n  interval: 0s\n").source.interval == nil)
        #expect(KeySourceCommand.warnings(arguments: ["no-such-helper-x"], additions: ["VAULT_TOKEN"], inherited: [:]) == [
            "source.command: no-such-helper-x is not an executable file in PATH (\(KeySourceCommand.defaultPath)); the key source will fail until it is",
            "source.environment: VAULT_TOKEN is to be passed on, but the daemon's environment has no VAULT_TOKEN",
        ])
        #expect(KeySourceCommand.warnings(arguments: ["sh"], additions: ["A=b"], inherited: [:]).isEmpty)
        #expect(KeydConfiguration.defaults.source.command.isEmpty)
        for (yaml, expected) in [
            ("source:\n  command: [\"aws secretsmanager get-secret-value\"]\n", "source.command"),
            ("source:\n  command: [bin/helper]\n", "relative path"),
            ("source:\n  interval: 30s\n", "source.interval"),
            ("source:\n  environment: [\"AWS REGION=x\"]\n", "not an environment variable name"),
            ("source:\n  environment: [\"1X=y\"]\n", "not an environment variable name"),
        ] {
            await #expect(throws: ConfigurationError.self, "\(yaml)") { try await load(yaml) }
            do {
                _ = try await load(yaml)
            } catch {
                #expect("\(error)".contains(expected), "\(error)")
            }
        }
    }
}

/// Stops the daemon (exit 0 expected) and checks none of `keys` is in its output.
private func finishWithoutKeys(_ served: ServedDaemon, _ keys: String...) async {
    #expect(await served.finish() == 0)
    for key in keys { #expect(!served.daemon.output.contains(key), "a key in the daemon's output") }
}

/// The key source in the daemon, against the mock API: a dead key healed with no spool
/// drop, a source still holding the dead key, a failing source.
@Suite("key source in the daemon", .serialized)
struct KeySourceDaemonTests {
    /// A daemon whose key source prints the file `source-key` (its stderr: `source-err`,
    /// its exit status: `source-exit`), checking every 10 s, backing off 1 s to 2 s.
    func start(valid: [String], interval: String = "0") async throws -> (ServedDaemon, String) {
        let dir = try TemporaryDirectory()
        let keyFile = dir.file("source-key")
        _ = FileManager.default.createFile(atPath: keyFile, contents: Data())
        let script = """
            cat '\(keyFile)'; [ -f '\(dir.file("source-err"))' ] && cat '\(dir.file("source-err"))' >&2; exit $(cat '\(dir.file("source-exit"))' 2>/dev/null || echo 0)
            """
        let served = try await ServedDaemon(
            validKeys: valid,
            extra: """
                check:
                  interval: 10s
                  confirm_delay: 0s
                  backoff_min: 1s
                  backoff_max: 2s
                  jitter: 0
                  report_min_interval: 0s
                source:
                  command: [/bin/sh, -c, "\(script.replacingOccurrences(of: "\"", with: "\\\""))"]
                  interval: \(interval)
                  timeout: 10s
                """, directory: dir)
        return (served, keyFile)
    }

    func write(_ key: String, to file: String) throws {
        try Data((key + "\n").utf8).write(to: URL(fileURLWithPath: file))
    }

    @Test("the active key regenerated: KEY_INVALIDATED, the source's new key verified and served, source=command; no spool drop")
    func healsDeadKey() async throws {
        let old = "rtk_source_old_key_1111"
        let new = "rtk_source_new_key_2222"
        let (served, keyFile) = try await start(valid: [old])
        try await served.activate(old)
        try write(new, to: keyFile)
        _ = served.mock.regenerate(old: old, new: new)
        let before = served.mock.requests().count
        _ = try await served.curl("/v1/check", method: "POST")
        let healed = try await eventually(timeout: .seconds(20)) {
            (try? await served.curl("/v1/key").text) == new
        }
        #expect(healed, "\(served.daemon.output)")
        let output = served.daemon.output
        #expect(output.contains("event=KEY_INVALIDATED"))
        #expect(output.contains("from the key source is now active (verified, replacing \(APIKey.fingerprint(of: old)); source=command)"))
        #expect(output.contains("key.source=command"))
        // The check, its confirmation, the new key's verification.
        let after = served.mock.requests().dropFirst(before)
        #expect(after.filter { $0.apiKeyFingerprint == APIKey.fingerprint(of: new) }.count == 1, "\(after)")
        let history = try await served.curl("/v1/history")
        #expect(history.text.contains("\"source\":\"command\""), "\(history.text)")
        await finishWithoutKeys(served, old, new)
    }

    @Test("the source still holds the dead key: no API request for it, one SOURCE_NO_NEW_KEY per backoff step; healed when the source changes")
    func deadKeyIsNotRetried() async throws {
        let old = "rtk_source_dead_key_3333"
        let new = "rtk_source_late_key_4444"
        let (served, keyFile) = try await start(valid: [old])
        try await served.activate(old)
        try write(old, to: keyFile)
        served.mock.setValidKeys([])
        _ = try await served.curl("/v1/check", method: "POST")
        #expect(try await served.logged("event=SOURCE_NO_NEW_KEY"), "\(served.daemon.output)")
        let afterInvalidation = served.mock.requests().count
        try await Task.sleep(for: .seconds(5))
        let output = served.daemon.output
        let steps = output.components(separatedBy: "event=SOURCE_NO_NEW_KEY").count - 1
        // Fetches at 0, 1, 3, 5 s (backoff 1 s, then 2 s): not a loop.
        #expect((2...5).contains(steps), "\(steps) entries:\n\(output)")
        #expect(output.contains("confirmed invalid"))
        #expect(served.mock.requests().count == afterInvalidation, "the dead key is never sent to the API again")
        #expect(!output.contains("SOURCE_FETCH_FAILED"))

        served.mock.setValidKeys([new])
        try write(new, to: keyFile)
        #expect(try await eventually(timeout: .seconds(10)) { (try? await served.curl("/v1/key").text) == new })
        await finishWithoutKeys(served, old, new)
    }

    @Test("a failing source: SOURCE_FETCH_FAILED with its exit status and redacted stderr; the working key stays served")
    func failingSource() async throws {
        let good = "rtk_source_good_key_5555"
        let leaked = "rtk_source_leaked_key_6666"
        let (served, keyFile) = try await start(valid: [good])
        try await served.activate(good)
        try write(leaked, to: keyFile)
        try Data("access denied for \(leaked) and \(good)\n".utf8).write(to: URL(fileURLWithPath: served.dir.file("source-err")))
        try Data("7".utf8).write(to: URL(fileURLWithPath: served.dir.file("source-exit")))
        let fetched = try await served.curl("/v1/fetch", method: "POST")
        #expect(fetched.status == 502)
        #expect(fetched.json?["result"]?.string == "failed")
        #expect(fetched.text.contains("exit status 7"))
        #expect(try await served.curl("/v1/key").text == good)
        let output = served.daemon.output
        #expect(output.contains("event=SOURCE_FETCH_FAILED"))
        #expect(output.contains("exit_status=7"))
        #expect(output.contains("access denied for [redacted] and [redacted]"), "\(output)")
        #expect(!output.contains(leaked) && !output.contains(good) && !fetched.text.contains(leaked))

        let status = try await served.curl("/v1/status")
        #expect(status.json?["key_source"]?["program"]?.string == "/bin/sh", "\(status.text)")
        #expect(status.json?["key_source"]?["last_result"]?.string == "failed")
        #expect(status.json?["key_source"]?["last_trigger"]?.string == "admin")
        let keyctl = try await runCommand([productsDirectory + "/recotap-keyctl", "status", "--socket", served.api])
        #expect(keyctl.output.contains("key source"), "\(keyctl.output)")
        #expect(keyctl.output.contains("/bin/sh, last run"), "\(keyctl.output)")

        // Unchanged: the source returns the active key.
        try write(good, to: keyFile)
        try Data("0".utf8).write(to: URL(fileURLWithPath: served.dir.file("source-exit")))
        let same = try await served.curl("/v1/fetch", method: "POST")
        #expect(same.status == 200 && same.json?["result"]?.string == "unchanged", "\(same.text)")
        #expect(await served.finish() == 0)
    }

    @Test("a working key is replaced only by a key the API accepts now: the API down, the source's new key is refused and the key stays")
    func workingKeyNeedsVerifiedReplacement() async throws {
        let good = "rtk_source_working_key_8888"
        let other = "rtk_source_other_key_9999"
        let (served, keyFile) = try await start(valid: [good])
        try await served.activate(good)
        try write(other, to: keyFile)
        served.mock.inject(.status(503, count: nil))
        let fetched = try await served.curl("/v1/fetch", method: "POST")
        #expect(fetched.status == 502 && fetched.json?["result"]?.string == "failed", "\(fetched.text)")
        #expect(fetched.text.contains("the working key is not replaced by one the API has not accepted"))
        #expect(try await served.curl("/v1/key").text == good)
        served.mock.clearFaults()
        served.mock.addValidKey(other)
        let again = try await served.curl("/v1/fetch", method: "POST")
        #expect(again.json?["result"]?.string == "activated", "\(again.text)")
        #expect(try await served.curl("/v1/key").text == other)
        #expect(await served.finish() == 0)
    }

    @Test("started with an empty store, the daemon fetches its first key from the source")
    func firstKeyAtStart() async throws {
        let dir = try TemporaryDirectory()
        let key = "rtk_source_first_key_7777"
        try Data((key + "\n").utf8).write(to: URL(fileURLWithPath: dir.file("k")))
        let served = try await ServedDaemon(
            validKeys: [key], extra: "source:\n  command: [cat, '\(dir.file("k"))']\n", directory: dir)
        #expect(try await eventually(timeout: .seconds(15)) { (try? await served.curl("/v1/key").text) == key })
        #expect(await served.finish() == 0)
    }

    @Test("SIGTERM during a slow fetch: the command is killed, the daemon exits 0 at once, no SOURCE_FETCH_FAILED")
    func shutdownDuringFetch() async throws {
        let dir = try TemporaryDirectory()
        let pidFile = dir.file("source.pid")
        let served = try await ServedDaemon(
            extra: "source:\n  command: [/bin/sh, -c, 'echo $$ > \(pidFile); exec sleep 120']\n  timeout: 120s\n", directory: dir)
        #expect(try await eventually(timeout: .seconds(10)) { FileManager.default.fileExists(atPath: pidFile) })
        let pid = try #require(Int32(String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        let started = ContinuousClock.now
        #expect(await served.finish() == 0)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(try await eventually(timeout: .seconds(5)) { kill(pid, 0) != 0 }, "the source command outlived the daemon")
        #expect(!served.daemon.output.contains("SOURCE_FETCH_FAILED"), "\(served.daemon.output)")
        #expect(served.daemon.output.contains("key source command stopped: the daemon is shutting down"))
    }

    @Test("the command missing: a warning at start, then SOURCE_FETCH_FAILED naming it and the PATH searched; the working key kept")
    func missingCommand() async throws {
        let good = "rtk_source_kept_key_1212"
        let served = try await ServedDaemon(validKeys: [good], extra: "source:\n  command: [recotap-no-such-helper, get]\n")
        try await served.activate(good)
        #expect(served.daemon.output.contains("source.command: recotap-no-such-helper is not an executable file in PATH"))
        let fetched = try await served.curl("/v1/fetch", method: "POST")
        #expect(fetched.status == 502 && fetched.json?["result"]?.string == "failed", "\(fetched.text)")
        #expect(try await served.logged("event=SOURCE_FETCH_FAILED"))
        #expect(served.daemon.output.contains("recotap-no-such-helper is not an executable file in PATH (/usr/local/sbin:"))
        #expect(try await served.curl("/v1/key").text == good)
        await finishWithoutKeys(served, good)
    }

    @Test("POST /v1/fetch is for admins, and 409 without a source")
    func fetchEndpoint() async throws {
        let served = try await ServedDaemon()
        let none = try await served.curl("/v1/fetch", method: "POST")
        #expect(none.status == 409 && none.json?["error"]?.string == "no_source")
        #expect(Endpoint.fetch.role == .admin && Endpoint.fetch.methods == [.POST])
        #expect(await served.finish() == 0)
    }
}

/// README "Fleets", the AWS Secrets Manager recipe, for real: the AWS CLI against moto's
/// Secrets Manager API on loopback.
@Suite("key source: AWS Secrets Manager (awscli + moto)", .serialized, .enabled(if: MotoServer.available, "pip install 'moto[server]' awscli"))
struct KeySourceAWSTests {
    @Test("first key at start, a regeneration healed with no spool drop, the dead key in the secrets manager not retried, a failing secrets manager logged with the working key kept")
    func awsRecipe() async throws {
        let dir = try TemporaryDirectory()
        let moto = try await MotoServer(in: dir)
        defer { kill(moto.process.processIdentifier, SIGKILL) }  // however the test ends
        let first = "rtk_aws_first_key_0001"
        let second = "rtk_aws_second_key_0002"
        try await moto.secretsManager(["create-secret", "--name", "recotap/api-key", "--secret-string", first])

        // The recipe as README "Fleets" gives it (with the endpoint of the local API).
        let command = [
            MotoServer.binDirectory! + "/aws", "--endpoint-url", moto.endpoint, "secretsmanager", "get-secret-value",
            "--secret-id", "recotap/api-key", "--query", "SecretString", "--output", "text",
        ]
        let environment = MotoServer.environment
        let served = try await ServedDaemon(
            validKeys: [first],
            extra: """
                check:
                  interval: 10s
                  confirm_delay: 0s
                  backoff_min: 1s
                  backoff_max: 2s
                  jitter: 0
                source:
                  command: [\(command.map { "\"\($0)\"" }.joined(separator: ", "))]
                  environment: [\(environment.joined(separator: ", "))]
                  timeout: 60s
                """, directory: dir)
        #expect(try await eventually(timeout: .seconds(30)) { (try? await served.curl("/v1/key").text) == first }, "\(served.daemon.output)")

        // The key is regenerated; nobody has stored the new one yet.
        _ = served.mock.regenerate(old: first, new: second)
        _ = try await served.curl("/v1/check", method: "POST")
        #expect(try await served.logged("event=SOURCE_NO_NEW_KEY", timeout: .seconds(30)), "\(served.daemon.output)")
        #expect(served.mock.requests().filter { $0.apiKeyFingerprint == APIKey.fingerprint(of: first) }.count == 3,
                "verification at start, the check, its confirmation; the dead key fetched again is not sent")

        // A person stores the new key: the daemon takes it at its next attempt.
        let stored = ContinuousClock.now
        try await moto.secretsManager(["put-secret-value", "--secret-id", "recotap/api-key", "--secret-string", second])
        #expect(try await eventually(timeout: .seconds(30)) { (try? await served.curl("/v1/key").text) == second })
        let healedIn = ContinuousClock.now - stored
        #expect(healedIn < .seconds(15), "backoff_max 2s + one aws run: \(healedIn)")
        #expect(served.daemon.output.contains("source=command"))

        // The secrets manager goes away: a clear entry, the key stays served.
        await moto.stop()
        let fetched = try await served.curl("/v1/fetch", method: "POST", timeout: .seconds(90))
        #expect(fetched.status == 502, "\(fetched.text)")
        #expect(try await served.curl("/v1/key").text == second)
        let output = served.daemon.output
        #expect(output.contains("event=SOURCE_FETCH_FAILED"))
        #expect(output.contains("Could not connect to the endpoint URL"), "aws's own words reach the journal: \(output)")
        await finishWithoutKeys(served, first, second)
    }
}
