import Foundation
import Logging
import Testing

@testable import RecotapKeyd

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/config").path

private func load(
    file: String? = nil, required: Bool = true, environment: [String: String] = [:], flags: [String] = []
) async throws -> KeydConfiguration {
    let parsed = try ConfigurationLoader.parseFlags(flags)
    return try await ConfigurationLoader(
        filePath: file, fileRequired: required, environment: environment, flags: parsed
    ).load()
}

/// The error a load throws; fails the test if it succeeds.
private func loadError(
    file: String? = nil, environment: [String: String] = [:], flags: [String] = []
) async -> ConfigurationError? {
    do {
        _ = try await load(file: file, environment: environment, flags: flags)
        Issue.record("expected the configuration to be refused")
        return nil
    } catch let error as ConfigurationError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

/// Each key's effective value, spelled as the configuration spells it; written
/// independently of the loader so the precedence test checks it.
private let readBack: [String: @Sendable (KeydConfiguration) -> String] = [
    "api.base_url": { $0.api.baseURL },
    "api.timeout": { DurationParsing.format($0.api.timeout) },
    "api.ca_file": { $0.api.caFile ?? "" },
    "api.proxy": { $0.api.proxy ?? "" },
    "api.allow_insecure_http": { String($0.api.allowInsecureHTTP) },
    "check.interval": { DurationParsing.format($0.check.interval) },
    "check.jitter": { String($0.check.jitter) },
    "check.confirm_delay": { DurationParsing.format($0.check.confirmDelay) },
    "check.backoff_min": { DurationParsing.format($0.check.backoffMin) },
    "check.backoff_max": { DurationParsing.format($0.check.backoffMax) },
    "check.report_min_interval": { DurationParsing.format($0.check.reportMinInterval) },
    "check.reminder_interval": { DurationParsing.format($0.check.reminderInterval) },
    "spool.directory": { $0.spool.directory },
    "spool.verify_before_activate": { String($0.spool.verifyBeforeActivate) },
    "store.path": { $0.store.path },
    "sockets.api": { $0.sockets.api },
    "sockets.credential": { $0.sockets.credential },
    "sockets.generation_file": { $0.sockets.generationFile ?? "" },
    "sockets.mode": { "0" + String($0.sockets.mode, radix: 8) },
    "access.readers.users": { $0.access.readers.users.joined(separator: ",") },
    "access.readers.groups": { $0.access.readers.groups.joined(separator: ",") },
    "access.admins.users": { $0.access.admins.users.joined(separator: ",") },
    "access.admins.groups": { $0.access.admins.groups.joined(separator: ",") },
    "access.units": { $0.access.units.joined(separator: ",") },
    "metrics.readers.users": { $0.metrics.readers.users.joined(separator: ",") },
    "metrics.readers.groups": { $0.metrics.readers.groups.joined(separator: ",") },
    "metrics.listen": { $0.metrics.listen?.description ?? "" },
    "metrics.allow_remote": { String($0.metrics.allowRemote) },
    "metrics.textfile": { $0.metrics.textfile ?? "" },
    "log.target": { $0.log.target.rawValue },
    "log.level": { $0.log.level.rawValue },
    "source.command": { $0.source.command.joined(separator: ",") },
    "source.interval": { $0.source.interval.map(DurationParsing.format) ?? "0" },
    "source.timeout": { DurationParsing.format($0.source.timeout) },
    "source.environment": { $0.source.environment.joined(separator: ",") },
]

/// A distinct valid value per key and per source ("env" or "flag").
private func override(_ key: String, _ source: String) -> String {
    switch key {
    case "api.base_url": "https://api.\(source).example/api/v1"
    case "api.timeout": source == "env" ? "30s" : "40s"
    case "api.ca_file": "/etc/\(source)/ca.pem"
    case "api.proxy": "http://proxy.\(source).example:3128"
    case "api.allow_insecure_http": "false"
    case "check.interval": source == "env" ? "15m" : "20m"
    case "check.jitter": source == "env" ? "0.3" : "0.4"
    case "check.confirm_delay": source == "env" ? "4s" : "5s"
    case "check.backoff_min": source == "env" ? "30s" : "40s"
    case "check.backoff_max": source == "env" ? "15m" : "20m"
    case "check.report_min_interval": source == "env" ? "30s" : "40s"
    case "check.reminder_interval": source == "env" ? "3h" : "4h"
    case "spool.directory": "/srv/\(source)/spool"
    case "spool.verify_before_activate": source == "env" ? "true" : "false"
    case "store.path": "/srv/\(source)/keyd.sqlite3"
    case "sockets.api": "/srv/\(source)/keyd.sock"
    case "sockets.credential": "/srv/\(source)/credential.sock"
    case "sockets.generation_file": "/srv/\(source)/generation"
    case "sockets.mode": source == "env" ? "0660" : "0666"
    case "access.readers.users": "\(source)-reader"
    case "access.readers.groups": "\(source)-readers,\(source)-more"
    case "access.admins.users": "\(source)-admin"
    case "access.admins.groups": "\(source)-admins"
    case "access.units": "\(source).service"
    case "metrics.readers.users": "\(source)-scraper"
    case "metrics.readers.groups": "\(source)-monitoring"
    case "metrics.listen": source == "env" ? "127.0.0.1:9852" : "[::1]:9853"
    case "metrics.allow_remote": source == "env" ? "true" : "false"
    case "metrics.textfile": "/srv/\(source)/keyd.prom"
    case "log.target": source == "env" ? "console" : "auto"
    case "log.level": source == "env" ? "notice" : "warning"
    case "source.command": "/usr/bin/\(source)-helper,--secret,\(source)"
    case "source.interval": source == "env" ? "2h" : "3h"
    case "source.timeout": source == "env" ? "50s" : "55s"
    case "source.environment": "REGION=\(source)"
    default: "?"
    }
}

@Suite("Configuration")
struct ConfigurationTests {
    @Test("no file, no environment, no flags gives the documented defaults")
    func defaults() async throws {
        let config = try await load(file: nil)
        #expect(config == KeydConfiguration.defaults)
        #expect(config.check.interval == .seconds(300))
        #expect(config.check.jitter == 0.1)
        #expect(config.api.baseURL == "https://eapi.recotap.com/api/v1")
        #expect(config.sockets.mode == 0o660)
        #expect(config.access.readers.groups == ["recotap-key"])
    }

    @Test("the shipped config/keyd.yaml states exactly the defaults")
    func shippedProductionFile() async throws {
        let config = try await load(file: repositoryRoot + "/config/keyd.yaml")
        #expect(config == KeydConfiguration.defaults)
    }

    @Test("the annotated config/keyd.yaml sets every key of the table, and each key's comment states the range the table enforces")
    func annotatedProductionFile() throws {
        let lines = try String(contentsOfFile: repositoryRoot + "/config/keyd.yaml", encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for key in ConfigurationKey.all {
            let parts = key.name.split(separator: ".").map(String.init)
            guard let section = lines.firstIndex(of: parts[0] + ":"),
                let line = lines[(section + 1)...].firstIndex(where: { $0.hasPrefix("  " + parts[1] + ":") })
            else {
                Issue.record("config/keyd.yaml does not set \(key.name)")
                continue
            }
            if parts.count == 3 {
                #expect(lines[line].contains(parts[2] + ":"), "config/keyd.yaml does not set \(key.name)")
            }
            guard let range = key.range else { continue }
            var comment: [String] = []
            var above = line - 1
            while above > section, lines[above].trimmingCharacters(in: .whitespaces).hasPrefix("#") {
                comment.insert(lines[above], at: 0)
                above -= 1
            }
            let text = comment.joined(separator: " ").replacingOccurrences(of: "#", with: " ")
                .split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(text.contains(range), "the comment on \(key.name) does not say \"\(range)\": \(text)")
        }
    }

    @Test("the development configuration keeps every path under the checkout")
    func shippedDevelopmentFile() async throws {
        let config = try await load(file: repositoryRoot + "/config/keyd.dev.yaml")
        let root = repositoryRoot + "/.keyd/"
        for path in [config.spool.directory, config.store.path, config.sockets.api, config.sockets.credential] {
            #expect(path.hasPrefix(root), "\(path) is outside \(root)")
        }
        #expect(config.log.target == .console)
    }

    @Test("an empty file, a comment-only file, empty sections and empty values of string keys set nothing", arguments: [
        "", "# nothing\n", "~\n", "check:\napi:\n", "api:\n  ca_file:\n  proxy: \"\"\n",
    ])
    func emptyFiles(_ text: String) async throws {
        let dir = try TemporaryDirectory()
        #expect(try await load(file: try dir.write("keyd.yaml", text)) == KeydConfiguration.defaults)
    }

    @Test("a file that is not YAML is refused, naming the file")
    func notYAML() async throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("keyd.yaml", "check: [1, 2\n")
        let error = try #require(await loadError(file: path))
        #expect(error.source == path)
        #expect(error.message.hasPrefix("not valid YAML"))
    }

    @Test("a missing default file is not an error; a missing --config file is")
    func missingFile() async throws {
        let absent = "/nonexistent/recotap-keyd/keyd.yaml"
        #expect(try await load(file: absent, required: false) == KeydConfiguration.defaults)
        do {
            _ = try await load(file: absent, required: true)
            Issue.record("expected an error")
        } catch let error as ConfigurationError {
            #expect(error.source == absent)
            #expect(error.description.contains("cannot read"))
        }
    }

    @Test("every key: file over default, environment over file, flag over environment")
    func precedence() async throws {
        let file = fixtures + "/valid/every-key.yaml"
        #expect(Set(readBack.keys) == Set(ConfigurationKey.all.map(\.name)), "the test must cover every key")

        let fromFile = try await load(file: file)
        for key in ConfigurationKey.all {
            #expect(
                readBack[key.name]!(fromFile) != readBack[key.name]!(KeydConfiguration.defaults),
                "the fixture must change \(key.name)")
        }
        #expect(fromFile.check.interval == .seconds(600))
        #expect(fromFile.access.units == ["file.service"])

        var environment: [String: String] = [:]
        for key in ConfigurationKey.all { environment[key.environmentVariable] = override(key.name, "env") }
        let fromEnvironment = try await load(file: file, environment: environment)
        for key in ConfigurationKey.all {
            #expect(readBack[key.name]!(fromEnvironment) == override(key.name, "env"), "\(key.name) from environment")
        }

        let flags = ConfigurationKey.all.flatMap { [$0.flag, override($0.name, "flag")] }
        let fromFlags = try await load(file: file, environment: environment, flags: flags)
        for key in ConfigurationKey.all {
            #expect(readBack[key.name]!(fromFlags) == override(key.name, "flag"), "\(key.name) from flag")
        }
    }

    @Test("environment variable and flag names follow the key names")
    func derivedNames() throws {
        let key = try #require(ConfigurationKey.named("api.base_url"))
        #expect(key.environmentVariable == "RECOTAP_KEYD_API_BASE_URL")
        #expect(key.flag == "--api-base-url")
        #expect(try ConfigurationLoader.parseFlags(["--check-interval=30s", "--log-level", "debug"])
            == ["check.interval": "30s", "log.level": "debug"])
    }

    @Test("relative paths in the file are relative to the file's directory")
    func relativePathsInFile() async throws {
        let config = try await load(file: fixtures + "/valid/relative-paths.yaml")
        let directory = fixtures + "/valid"
        #expect(config.spool.directory == directory + "/spool")
        #expect(config.store.path == fixtures + "/state/keyd.sqlite3")
        #expect(config.sockets.api == directory + "/run/keyd.sock")
        #expect(config.sockets.credential == directory + "/run/credential.sock")
    }

    static let invalidFixtures: [String] = {
        let directory = fixtures + "/invalid"
        return ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }()

    @Test("each invalid fixture is refused, naming its key", arguments: invalidFixtures)
    func invalidFixture(_ name: String) async throws {
        let path = fixtures + "/invalid/" + name
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let expected = try #require(
            text.split(separator: "\n").first.flatMap { $0.hasPrefix("# expect: ") ? String($0.dropFirst(10)) : nil },
            "fixture \(name) must start with '# expect: KEY'")
        let error = try #require(await loadError(file: path))
        #expect(error.key == expected, "\(name): \(error)")
        #expect(error.description.contains(expected))
        #expect(error.source == path)
    }

    @Test("the invalid fixtures cover the cases the issue lists")
    func fixtureCoverage() {
        for required in ["unknown-key.yaml", "bad-duration.yaml", "negative-interval.yaml", "jitter-out-of-range.yaml"] {
            #expect(Self.invalidFixtures.contains(required))
        }
    }

    @Test("range errors name the allowed range")
    func rangeMessage() async throws {
        let error = try #require(await loadError(file: fixtures + "/invalid/jitter-out-of-range.yaml"))
        #expect(error.message.contains("allowed 0.0 to 0.5"))
        let interval = try #require(await loadError(file: fixtures + "/invalid/interval-too-short.yaml"))
        #expect(interval.message.contains("allowed 10s to 1d"))
    }

    @Test("a relative socket path from the environment or a flag is refused: an absolute path is needed")
    func relativeSocketPathOutsideFile() async throws {
        let fromEnvironment = try #require(await loadError(environment: ["RECOTAP_KEYD_SOCKETS_API": "run/keyd.sock"]))
        #expect(fromEnvironment.key == "sockets.api")
        #expect(fromEnvironment.message.contains("absolute"))
        #expect(fromEnvironment.source == "environment variable RECOTAP_KEYD_SOCKETS_API")
        let fromFlag = try #require(await loadError(flags: ["--sockets-credential", "credential.sock"]))
        #expect(fromFlag.key == "sockets.credential")
    }

    @Test("an unknown RECOTAP_KEYD_ variable is refused by name; other variables are ignored")
    func unknownEnvironmentVariable() async throws {
        let error = try #require(await loadError(environment: ["RECOTAP_KEYD_CHECK_INTERVALL": "5m"]))
        #expect(error.key == "RECOTAP_KEYD_CHECK_INTERVALL")
        #expect(try await load(environment: ["PATH": "/usr/bin", "RECOTAP_OTHER": "x"]) == KeydConfiguration.defaults)
    }

    @Test("bad values from the environment and flags are refused naming the key")
    func badOverrides() async throws {
        let jitter = try #require(await loadError(environment: ["RECOTAP_KEYD_CHECK_JITTER": "2"]))
        #expect(jitter.key == "check.jitter")
        let interval = try #require(await loadError(flags: ["--check-interval", "-1m"]))
        #expect(interval.key == "check.interval")
        let bool = try #require(await loadError(flags: ["--spool-verify-before-activate", "perhaps"]))
        #expect(bool.key == "spool.verify_before_activate")
    }

    @Test("unknown flags and flags without a value are refused")
    func badFlags() throws {
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.parseFlags(["--check-intervall", "5m"]) }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.parseFlags(["--check-interval"]) }
    }

    @Test("plain http is allowed to loopback hosts, and elsewhere only when explicitly allowed")
    func insecureHTTP() async throws {
        for url in ["http://127.0.0.1:8089/api/v1", "http://localhost/api/v1", "http://[::1]:80/api/v1"] {
            #expect(try await load(environment: ["RECOTAP_KEYD_API_BASE_URL": url]).api.baseURL == url)
        }
        let allowed = try await load(environment: [
            "RECOTAP_KEYD_API_BASE_URL": "http://api.internal/api/v1", "RECOTAP_KEYD_API_ALLOW_INSECURE_HTTP": "true",
        ])
        #expect(allowed.api.allowInsecureHTTP)
        #expect(try await load(flags: ["--api-base-url", "https://eapi.recotap.com/api/v1/"]).api.baseURL
            == "https://eapi.recotap.com/api/v1")
    }

    @Test("durations", arguments: [
        ("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000), ("1h30m", 5_400_000), ("500ms", 500), ("2d", 172_800_000),
    ] as [(String, Int64)])
    func durations(_ text: String, _ milliseconds: Int64) {
        #expect(DurationParsing.parse(text)?.milliseconds == milliseconds)
    }

    @Test("durations without a unit or with an unknown one are refused", arguments: ["300", "5 minutes", "5w", "", "-5m", "m"])
    func badDurations(_ text: String) {
        #expect(DurationParsing.parse(text) == nil)
    }
}
