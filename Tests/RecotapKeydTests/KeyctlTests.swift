import Foundation
import Testing

@testable import RecotapKeyd

/// `recotap-keyctl`, the real binary, against the real daemon.
@Suite("recotap-keyctl (real binaries)", .enabled(if: haveCurl, "needs curl"))
struct KeyctlTests {
    static let key = "rtk_keyctl_key_0123456789"
    static let next = "rtk_keyctl_next_key_98765"

    private func keyctl(_ served: ServedDaemon, _ arguments: [String], input: String? = nil, as wrapper: [String] = [])
        async throws -> CommandResult
    {
        try await runCommand(
            wrapper + [productsDirectory + "/recotap-keyctl"] + arguments + ["--config", served.dir.file("keyd.yaml")],
            input: input.map { Data($0.utf8) })
    }

    @Test("get prints the key and nothing else; with no key, exit 3 and a message on stderr")
    func get() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key])
        let none = try await keyctl(served, ["get"])
        #expect(none.status == 3)
        #expect(none.stdout.isEmpty)
        #expect(none.stderr.contains("no API key yet"))
        try await served.activate(Self.key)
        let got = try await keyctl(served, ["get"])
        #expect(got.status == 0)
        #expect(got.stdout == Data(Self.key.utf8), "exactly the key when not at a terminal")
        #expect(await served.finish() == 0)
    }

    @Test("rotate from stdin: written as a hidden 0640 file, renamed, and the verdict awaited — activated (0) or rejected with the reason (7)")
    func rotate() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key, Self.next])
        let activated = try await keyctl(served, ["rotate"], input: Self.key + "\n")
        #expect(activated.status == 0, "\(activated.stderr)")
        #expect(activated.output.contains("key \(APIKey.fingerprint(of: Self.key)) is now active"))
        #expect(!activated.output.contains(Self.key) && !activated.stderr.contains(Self.key))
        #expect(try await served.curl("/v1/key").body == Data(Self.key.utf8))

        let file = try served.dir.write("next.key", Self.next)
        #expect(try await keyctl(served, ["rotate", file]).status == 0)
        #expect(try await served.curl("/v1/key").headers["x-key-version"] == "2")

        let wrong = try await keyctl(served, ["rotate", "-"], input: "rtk_not_known_to_the_api_1")
        #expect(wrong.status == 7)
        #expect(wrong.stderr.contains("rejected: refused by the API (HTTP 401"))
        #expect(try await served.curl("/v1/key").headers["x-key-version"] == "2", "the working key stays")

        let typo = try await keyctl(served, ["rotate"], input: "two words")
        #expect(typo.status == 1)
        #expect(typo.stderr.contains("that is not a key: whitespace inside the key"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: served.spool).filter { $0 != "rejected" }.isEmpty)
        #expect(await served.finish() == 0)
        #expect(!served.daemon.output.contains(Self.key) && !served.daemon.output.contains(Self.next))
    }

    @Test("status: a human summary (and --json); check: exit 0 only for valid; history: a table and --json")
    func statusCheckHistory() async throws {
        // Every check here must reach the API: no on-demand budget in the way.
        let served = try await ServedDaemon(validKeys: [Self.key], extra: "check:\n  report_min_interval: 0s")
        try await served.activate(Self.key)
        let fingerprint = APIKey.fingerprint(of: Self.key)

        let check = try await keyctl(served, ["check"])
        #expect(check.status == 0)
        #expect(check.output.hasPrefix("valid (HTTP 200"))

        let status = try await keyctl(served, ["status"])
        #expect(status.status == 0)
        for expected in ["key", fingerprint, "(version 1): valid", "last check", "next check", "spool", "0 waiting", "daemon"] {
            #expect(status.output.contains(expected), "\(expected) in:\n\(status.output)")
        }
        let json = try await keyctl(served, ["status", "--json"])
        #expect(JSONValue.parse(json.output)?["fingerprint"]?.string == fingerprint)

        let history = try await keyctl(served, ["history"])
        #expect(history.output.hasPrefix("VERSION  FINGERPRINT"))
        #expect(history.output.contains(fingerprint))
        #expect(JSONValue.parse(try await keyctl(served, ["history", "--json"]).output)?["keys"]?.array?.count == 1)

        served.mock.regenerate()
        let first = try await keyctl(served, ["check"])
        #expect(first.status == 4, "the check that meets a 401 answers its confirmation")
        #expect(first.output.hasPrefix("invalid (HTTP 401"))
        let dead = try await keyctl(served, ["status"])
        #expect(dead.status == 4)
        #expect(dead.output.contains("INVALID"))
        #expect(try await keyctl(served, ["get"]).status == 4)
        #expect(await served.finish() == 0)
    }

    @Test("wait returns when the key changes; --timeout ends with exit 8")
    func wait() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key, Self.next])
        try await served.activate(Self.key)
        let timedOut = try await keyctl(served, ["wait", "--timeout", "1"])
        #expect(timedOut.status == 8)

        let spool = served.spool
        let writer = Task.detached {
            try await Task.sleep(for: .milliseconds(500))
            _ = try SpoolWriter.write(APIKey(secret: Self.next), into: spool)
        }
        let changed = try await keyctl(served, ["wait", "--after", "1", "--timeout", "30"])
        try await writer.value
        #expect(changed.status == 0)
        #expect(changed.output.contains("key \(APIKey.fingerprint(of: Self.next)) is active (version 2)"))
        #expect(await served.finish() == 0)
    }

    @Test("not running: exit 6 and a clear message; refused by the daemon: exit 5", .enabled(if: canDropToNobody, "needs root and setpriv"))
    func errors() async throws {
        let notRunning = try await runCommand([productsDirectory + "/recotap-keyctl", "status", "--socket", "/nonexistent/keyd.sock"])
        #expect(notRunning.status == 6)
        #expect(notRunning.stderr.contains("recotap-keyd is not running"))

        let served = try await ServedDaemon(validKeys: [Self.key], socketMode: "0666")
        chmod(served.dir.file("run"), 0o755)
        try await served.activate(Self.key)
        let copy = served.dir.file("recotap-keyctl")
        try FileManager.default.copyItem(atPath: productsDirectory + "/recotap-keyctl", toPath: copy)
        chmod(copy, 0o755)
        let refused = try await runCommand(asNobody() + [copy, "get", "--socket", served.api])
        #expect(refused.status == 5)
        #expect(refused.stderr.contains("refused"))
        #expect(refused.stdout.isEmpty)
        #expect(await served.finish() == 0)
    }
}
