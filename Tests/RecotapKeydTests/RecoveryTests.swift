import Foundation
import Testing

@testable import RecotapKeyd

/// Re-verifying a key declared invalid (a false invalidation undone) and rolling back
/// to the key retired last, with the real binaries against the mock API.
@Suite("re-verify and roll back (real binaries)", .enabled(if: haveCurl, "needs curl"))
struct RecoveryTests {
    static let key = "rtk_recovery_key_0123456789"
    static let wrong = "rtk_wrong_user_key_98765432"

    private func keyctl(_ served: ServedDaemon, _ arguments: [String]) async throws -> CommandResult {
        try await runCommand([productsDirectory + "/recotap-keyctl"] + arguments + ["--config", served.dir.file("keyd.yaml")])
    }

    /// Recotap answers 401 for `key` for a while (an incident on its side), and the
    /// daemon confirms it: the key is declared invalid.
    private func falselyInvalidated(_ served: ServedDaemon) async throws {
        served.mock.setValidKeys([])
        let check = try await keyctl(served, ["check"])
        #expect(check.status == 4, "confirmed invalid: \(check.output)")
        #expect(try await served.curl("/v1/key").status == 503)
    }

    private func apiRequests(_ served: ServedDaemon) -> Int {
        served.mock.requests().filter { $0.path.hasPrefix("/api/v1/accounts") }.count
    }

    @Test("reverify: refused while the API still answers 401 (nothing changes), then the key is active and valid again under a new version, KEY_ACTIVATED re-verified")
    func reverify() async throws {
        let served = try await ServedDaemon(
            validKeys: [Self.key], extra: "check:\n  report_min_interval: 0s\n  confirm_delay: 1s")
        try await served.activate(Self.key)
        try await falselyInvalidated(served)

        let still = try await keyctl(served, ["reverify"])
        #expect(still.status == 4, "\(still.output)")
        #expect(still.stderr.contains("the API still answers 401"))
        let dead = try await served.curl("/v1/key")
        #expect(dead.status == 503)
        #expect(dead.headers["x-key-version"] == "1", "nothing changed")

        served.mock.setValidKeys([Self.key])
        served.mock.inject(.status(503))
        let outage = try await served.curl("/v1/reverify", method: "POST")
        #expect(outage.status == 503, "an outage is not a refusal")
        #expect(outage.json?["error"]?.string == "api_unavailable")
        #expect(outage.json?["outcome"]?.string == "unreachable")
        #expect(try await served.curl("/v1/key").headers["x-key-version"] == "1", "nothing changed")

        let done = try await keyctl(served, ["reverify", "--json"])
        #expect(done.status == 0, "\(done.stderr)")
        let body = try #require(JSONValue.parse(done.output))
        #expect(body["version"]?.int == 2)
        #expect(body["from_version"]?.int == 1)
        #expect(body["state"]?.string == "valid")
        #expect(body["previous_fingerprint"]?.string == APIKey.fingerprint(of: Self.key))
        let served2 = try await served.curl("/v1/key")
        #expect(served2.status == 200)
        #expect(served2.body == Data(Self.key.utf8))
        #expect(served2.headers["x-key-version"] == "2")
        #expect(try await served.curl("/v1/status").json?["state"]?.string == "valid")
        #expect(try await served.logged("re-verified: the API accepts it again"))
        #expect(served.daemon.output.contains("reason=re-verified"))

        // Not declared invalid any more: nothing to re-verify, and nothing asked.
        let before = apiRequests(served)
        let nothing = try await keyctl(served, ["reverify"])
        #expect(nothing.status == 1)
        #expect(nothing.stderr.contains("not declared invalid"))
        #expect(apiRequests(served) == before)
        #expect(await served.finish() == 0)
        #expect(!served.daemon.output.contains(Self.key))
    }

    @Test("dropping a key declared invalid asks the API again: refused with what it answered, within the call budget; accepted, it is active again")
    func redropped() async throws {
        let served = try await ServedDaemon(validKeys: [Self.key], extra: "check:\n  confirm_delay: 1s\n  report_min_interval: 5s")
        try await served.activate(Self.key)
        // The admin check just above spent the budget of on-demand checks, not this one.
        try await falselyInvalidated(served)

        let before = apiRequests(served)
        _ = try SpoolWriter.write(APIKey(secret: Self.key), into: served.spool)
        #expect(try await served.logged("was declared invalid since"))
        #expect(try await served.logged("and was asked about again: the API still answers 401"))
        #expect(apiRequests(served) == before + 1)

        // Again at once: within check.report_min_interval, the API is not asked.
        _ = try SpoolWriter.write(APIKey(secret: Self.key), into: served.spool)
        #expect(try await served.logged("it is asked about again at most once per check.report_min_interval"))
        #expect(apiRequests(served) == before + 1)
        #expect(try await served.curl("/v1/key").status == 503, "still the dead key, nothing else changed")

        // An admin is not held back by the spool's budget.
        let admin = try await served.curl("/v1/reverify", method: "POST")
        #expect(admin.status == 409)
        #expect(admin.json?["outcome"]?.string == "invalid")
        #expect(apiRequests(served) == before + 2)

        served.mock.setValidKeys([Self.key])
        try await Task.sleep(for: .seconds(5))
        _ = try SpoolWriter.write(APIKey(secret: Self.key), into: served.spool)
        #expect(try await eventually(timeout: .seconds(15)) { (try? await served.curl("/v1/key").headers["x-key-version"]) == "2" })
        let now = try await served.curl("/v1/key")
        #expect(now.status == 200)
        #expect(now.headers["x-key-version"] == "2")
        let spool = JSONValue.parse(try await served.curl("/v1/spool").text)
        #expect(spool?["recent"]?.array?.first?["verdict"]?.string == "activated")
        #expect(await served.finish() == 0)
        #expect(!served.daemon.output.contains(Self.key))
    }

    @Test("rollback: the key retired last, verified first, active again as a new version with KEY_ROLLED_BACK; refused (nothing changed) when the API does not accept it or there is none")
    func rollback() async throws {
        let served = try await ServedDaemon(
            validKeys: [Self.key, Self.wrong], extra: "check:\n  report_min_interval: 0s")
        let none = try await keyctl(served, ["rollback"])
        #expect(none.status == 1)
        #expect(none.stderr.contains("nothing to roll back to"))

        try await served.activate(Self.key)
        let lone = try await served.curl("/v1/rollback", method: "POST")
        #expect(lone.status == 409)
        #expect(JSONValue.parse(lone.text)?["error"]?.string == "no_previous_key")

        try await served.activate(Self.wrong)  // the wrong Recotap user's key
        let done = try await keyctl(served, ["rollback"])
        #expect(done.status == 0, "\(done.stderr)")
        #expect(done.output.contains("rolled back to key \(APIKey.fingerprint(of: Self.key))"))
        let back = try await served.curl("/v1/key")
        #expect(back.body == Data(Self.key.utf8))
        #expect(back.headers["x-key-version"] == "3", "a new version: versions only grow")
        #expect(try await served.logged("event=KEY_ROLLED_BACK"))
        #expect(served.daemon.output.contains("rolled_back_from_version=1"))
        let history = JSONValue.parse(try await served.curl("/v1/history").text)
        #expect(history?["keys"]?.array?[1]["retire_reason"]?.string == "rolled back to version 1")

        // The previous key is now the wrong one; the API no longer accepts it.
        served.mock.setValidKeys([Self.key])
        let refused = try await keyctl(served, ["rollback"])
        #expect(refused.status == 4)
        #expect(refused.stderr.contains("the API still answers 401"))
        #expect(try await served.curl("/v1/key").headers["x-key-version"] == "3", "nothing changed")

        #expect(await served.finish() == 0)
        #expect(!served.daemon.output.contains(Self.key) && !served.daemon.output.contains(Self.wrong))
    }

    @Test("re-verifications and rollbacks ask the API at most once per check.report_min_interval: 429 too_soon with Retry-After; for admins only (403 otherwise)")
    func budget() async throws {
        let served = try await ServedDaemon(
            validKeys: [Self.key, Self.wrong], socketMode: "0666", extra: "check:\n  report_min_interval: 60s")
        try await served.activate(Self.key)
        try await served.activate(Self.wrong)
        served.mock.setValidKeys([Self.wrong])
        let before = apiRequests(served)
        let first = try await served.curl("/v1/rollback", method: "POST")
        #expect(first.status == 409)
        #expect(JSONValue.parse(first.text)?["http_status"]?.int == 401)
        let second = try await served.curl("/v1/rollback", method: "POST")
        #expect(second.status == 429)
        #expect(JSONValue.parse(second.text)?["error"]?.string == "too_soon")
        #expect(second.headers["retry-after"].flatMap(Int.init).map { $0 > 50 && $0 <= 60 } == true)
        let reverify = try await served.curl("/v1/reverify", method: "POST")
        #expect(reverify.status == 409, "the active key is not invalid: answered without asking")
        #expect(reverify.json?["error"]?.string == "not_invalid")
        #expect(apiRequests(served) == before + 1)

        if canDropToNobody {
            for path in ["/v1/reverify", "/v1/rollback"] {
                let denied = try await served.curl(path, method: "POST", as: asNobody())
                #expect(denied.status == 403, "\(path) as nobody: \(denied.status)")
                #expect(denied.json?["error"]?.string == "access_denied")
            }
            #expect(apiRequests(served) == before + 1)
        }
        #expect(await served.finish() == 0)
    }
}
