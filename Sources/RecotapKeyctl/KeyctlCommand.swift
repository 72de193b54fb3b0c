import ArgumentParser
import Foundation
import RecotapKeyd
#if canImport(Glibc)
import Glibc
#endif

/// recotap-keyctl: run by its own executable and, in the installed programs, by
/// `recotap-keyd` when it is called as `recotap-keyctl` (a symlink: one binary, one copy
/// of the Swift runtime, README "Install from the Debian package").
public struct KeyctlCommand: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "recotap-keyctl",
        abstract: "Talks to recotap-keyd: get the key, see its status, check it, rotate it.",
        discussion: """
            Exit codes: 0 success, 1 failure (or a check that did not say valid), 3 no key,
            4 key invalid, 5 access refused, 6 recotap-keyd not running, 7 key rejected,
            8 timed out, 64 usage.
            """,
        version: KeydVersion.full,
        subcommands: [
            Get.self, Status.self, Check.self, History.self, Rotate.self, Wait.self, Reverify.self, Rollback.self,
            Fetch.self, VerifyCredential.self, RestartConsumer.self, Exec.self,
        ]
    )
}

/// `--socket` and `--config`, shared by every subcommand.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "keyd.sock (default: sockets.api from the configuration file).")
    var socket: String?

    @Option(name: .long, help: "The daemon's configuration file (default \(KeydConfiguration.defaultPath)).")
    var config: String?

    func configuration() async throws(KeyctlError) -> KeydConfiguration {
        do {
            return try await ConfigurationLoader(
                filePath: config ?? KeydConfiguration.defaultPath, fileRequired: config != nil,
                environment: ProcessInfo.processInfo.environment, flags: [:]
            ).load()
        } catch {
            throw KeyctlError(exit: .failure, message: "\(error)")
        }
    }

    func client() async throws(KeyctlError) -> DaemonClient {
        if let socket { return DaemonClient(socketPath: socket) }
        return DaemonClient(socketPath: try await configuration().sockets.api)
    }
}

/// Runs a subcommand's body, printing a ``KeyctlError`` to stderr and exiting with its code.
func runReportingErrors(_ body: () async throws(KeyctlError) -> Void) async throws {
    do {
        try await body()
    } catch {
        FileHandle.standardError.write(Data("recotap-keyctl: \(error.message)\n".utf8))
        throw ExitCode(error.exit.rawValue)
    }
}

/// `--timeout`: a number of seconds, not NaN, infinity or below zero. Larger than a
/// century is taken as it is (the wait ends with the process).
func validateTimeout(_ timeout: Double) throws {
    guard timeout.isFinite, timeout >= 0 else {
        throw ValidationError("--timeout must be a number of seconds, 0 or more (got \(timeout))")
    }
}

/// Turns the daemon's answer to `GET /v1/key` into an error when it carries no key.
func requireKey(_ response: DaemonResponse) throws(KeyctlError) {
    switch response.status {
    case 200: return
    case 404: throw KeyctlError(exit: .noKey, message: response.message)
    case 503: throw KeyctlError(exit: .keyInvalid, message: response.message)
    default: throw KeyctlError(exit: .failure, message: "unexpected answer: \(response.message)")
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the key and nothing else (for KEY=$(recotap-keyctl get)).")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            let response = try await options.client().request(.GET, "/v1/key", json: false)
            try requireKey(response)
            // A newline only for a person at a terminal: $(…) strips it anyway, and a
            // redirect gets exactly the key.
            let text = isatty(STDOUT_FILENO) == 1 ? response.body + "\n" : response.body
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The key's state, checks and spool at a glance.")
    @OptionGroup var options: ClientOptions
    @Flag(name: .long, help: "The daemon's JSON instead.") var json = false

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            let response = try await options.client().request(.GET, "/v1/status")
            guard response.status == 200, let status = response.decoded(Wire.Status.self) else {
                throw KeyctlError(exit: .failure, message: "unexpected answer: \(response.message)")
            }
            print(json ? response.body.trimmingCharacters(in: .whitespacesAndNewlines) : StatusReport.render(status, now: Date()))
            switch status.state {
            case "none": throw KeyctlError(exit: .noKey, message: "no key yet")
            case "invalid": throw KeyctlError(exit: .keyInvalid, message: "the key is invalid")
            default: break
            }
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the key against the API now; exit 0 only when it is valid.")
    @OptionGroup var options: ClientOptions
    @Flag(name: .long, help: "The daemon's JSON instead.") var json = false

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            let response = try await options.client().request(.POST, "/v1/check", timeout: .seconds(120))
            if response.status == 404 { throw KeyctlError(exit: .noKey, message: response.message) }
            guard response.status == 200, let result = response.decoded(Wire.Check.self), let outcome = result.outcome else {
                throw KeyctlError(exit: .failure, message: "unexpected answer: \(response.message)")
            }
            print(json ? response.body.trimmingCharacters(in: .whitespacesAndNewlines) : StatusReport.describeCheck(result))
            switch outcome {
            case "valid": return
            case "invalid": throw KeyctlError(exit: .keyInvalid, message: "the key is invalid")
            default: throw KeyctlError(exit: .failure, message: "the check was inconclusive (\(outcome))")
            }
        }
    }
}

/// `reverify` and `rollback`: one request each, the same answers.
struct Reinstating {
    let path: String

    func run(_ options: ClientOptions, json: Bool) async throws(KeyctlError) {
        let response = try await options.client().request(.POST, path, timeout: .seconds(120))
        if response.status == 200, let done = response.decoded(Wire.Reinstated.self) {
            print(json ? response.body.trimmingCharacters(in: .whitespacesAndNewlines) : done.message)
            return
        }
        let failure = response.decoded(Wire.Failure.self)
        switch (response.status, failure?.error) {
        case (409, "refused"?) where failure?.outcome == CheckOutcome.invalid.rawValue:
            throw KeyctlError(exit: .keyInvalid, message: response.message)
        case (409, "no_key"?): throw KeyctlError(exit: .noKey, message: response.message)
        default: throw KeyctlError(exit: .failure, message: response.message)
        }
    }
}

struct Reverify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the API again about an active key declared invalid; it is valid again if the API now accepts it.",
        discussion: """
            For a false invalidation (Recotap answered 401 by mistake). Exit 0 when the key is active and valid \
            again, 4 when the API still answers 401, 3 when there is no key, 1 when the active key is not declared \
            invalid or the API could not be asked now (at most one such request per check.report_min_interval). \
            Dropping the same key into the spool again does the same.
            """)
    @OptionGroup var options: ClientOptions
    @Flag(name: .long, help: "The daemon's JSON instead.") var json = false

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            try await Reinstating(path: "/v1/reverify").run(options, json: json)
        }
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the key retired last active again, if its secret is still held and the API accepts it.",
        discussion: """
            For a key of the wrong Recotap user dropped into the spool. The previous key is verified first; \
            if the API does not accept it, nothing changes. Exit 0 when rolled back, 4 when the API answers 401 \
            for the previous key, 1 otherwise (no previous key, its secret erased, another refusal, or asked too \
            soon).
            """)
    @OptionGroup var options: ClientOptions
    @Flag(name: .long, help: "The daemon's JSON instead.") var json = false

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            try await Reinstating(path: "/v1/rollback").run(options, json: json)
        }
    }
}

struct Fetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the key source command now and take the key it returns (after verifying it).",
        discussion: """
            For a key just stored in the secrets manager (source.command in the configuration). The daemon \
            runs the command at once, whatever its backoff. Exit 0 when the source's key is active (new, or \
            already), 1 when it brought no new key or failed (the message says why; the journal has the \
            command's summarised standard error).
            """)
    @OptionGroup var options: ClientOptions
    @Flag(name: .long, help: "The daemon's JSON instead.") var json = false

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            let response = try await options.client().request(.POST, "/v1/fetch", timeout: .seconds(900))
            guard let fetched = response.decoded(Wire.Fetch.self) else {
                throw KeyctlError(exit: .failure, message: response.message)
            }
            let text = json ? response.body.trimmingCharacters(in: .whitespacesAndNewlines) : fetched.message
            switch fetched.result {
            case "activated", "unchanged": print(text)
            default: throw KeyctlError(exit: .failure, message: text)
            }
        }
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Every key the daemon has known, newest first (no secrets).")
    @OptionGroup var options: ClientOptions
    @Flag(name: .long, help: "The daemon's JSON instead.") var json = false
    @Option(name: .long, help: "At most this many keys (1–1000).") var limit = 100

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            let response = try await options.client().request(.GET, "/v1/history?limit=\(limit)")
            guard response.status == 200, let keys = response.decoded(Wire.History.self)?.keys else {
                throw KeyctlError(exit: .failure, message: "unexpected answer: \(response.message)")
            }
            print(json ? response.body.trimmingCharacters(in: .whitespacesAndNewlines) : StatusReport.historyTable(keys))
        }
    }
}

struct Rotate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a new key into the spool and wait for the daemon's verdict.",
        discussion: "Reads the key from FILE, or from standard input (without echo at a terminal) when FILE is - or absent.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "A file holding the key, or - for standard input.") var file: String = "-"
    @Option(name: .long, help: "The spool directory (default: spool.directory from the configuration file).")
    var spool: String?
    @Option(name: .long, help: "Seconds to wait for the verdict.") var timeout: Double = 60

    func validate() throws { try validateTimeout(timeout) }

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            let key = try KeyInput.read(file)
            let configuration = (spool == nil || options.socket == nil) ? try await options.configuration() : nil
            let directory = spool ?? configuration!.spool.directory
            let client = DaemonClient(socketPath: options.socket ?? configuration!.sockets.api)
            let name: String
            do throws(SpoolWriteError) {
                name = try SpoolWriter.write(key, into: directory)
            } catch {
                throw KeyctlError(exit: .failure, message: error.message)
            }
            FileHandle.standardError.write(Data("key \(key.fingerprint) written to \(directory)/\(name); waiting for recotap-keyd…\n".utf8))
            do throws(KeyctlError) {
                try client.probe()
            } catch {
                throw KeyctlError(
                    exit: error.exit, message: "\(error.message); the key stays in the spool and is judged when recotap-keyd starts")
            }
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                let response = try await client.request(.GET, "/v1/spool")
                guard response.status == 200, let recent = response.decoded(Wire.Spool.self)?.recent else {
                    throw KeyctlError(exit: .failure, message: "unexpected answer: \(response.message)")
                }
                if let verdict = recent.first(where: { $0.file == name }) {
                    try await report(verdict, key: key, client: client)
                    return
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
            throw KeyctlError(
                exit: .timedOut,
                message: "no verdict on \(name) after \(Saturating.int64(timeout) ?? 0) s; see journalctl -u recotap-keyd (the file stays in the spool)")
        }
    }

    private func report(_ verdict: Wire.SpoolVerdict, key: APIKey, client: DaemonClient) async throws(KeyctlError) {
        let reason = verdict.reason ?? "no reason given"
        switch verdict.verdict {
        case "activated":
            let status = try? await client.request(.GET, "/v1/status").decoded(Wire.Status.self)
            let state = status?.state ?? "active"
            let version = status.map { ", version \($0.version)" } ?? ""
            print("key \(key.fingerprint) is now active (\(state == "valid" ? "verified with the API" : state)\(version))")
        case "already_active":
            print("key \(key.fingerprint) was already the active key")
        case "rejected":
            throw KeyctlError(exit: .rejected, message: "key \(key.fingerprint) rejected: \(reason)")
        default:
            throw KeyctlError(exit: .rejected, message: "key \(key.fingerprint) not taken: \(reason)")
        }
    }
}

struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Return when the key changes (a new version is active).")
    @OptionGroup var options: ClientOptions
    @Option(name: .long, help: "Wait for a version other than this one (default: the current one).")
    var after: Int64?
    @Option(name: .long, help: "Give up after this many seconds (exit 8).") var timeout: Double = 3600

    func validate() throws { try validateTimeout(timeout) }

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            let client = try await options.client()
            var version = after
            if version == nil {
                let status = try await client.request(.GET, "/v1/status")
                version = status.decoded(Wire.Status.self)?.version ?? 0
            }
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else {
                    throw KeyctlError(exit: .timedOut, message: "the key did not change in \(Saturating.int64(timeout) ?? 0) s")
                }
                let wait = min(left, 300)
                let response = try await client.request(
                    .GET, "/v1/key?wait=\(String(format: "%.3f", wait))&after=\(version ?? 0)",
                    timeout: .milliseconds((Saturating.int64(wait * 1000) ?? 0) + 10_000))
                if response.status == 304 { continue }
                let fingerprint = response.header("X-Key-Fingerprint") ?? "?"
                let newVersion = response.header("X-Key-Version") ?? "?"
                switch response.status {
                case 200: print("key \(fingerprint) is active (version \(newVersion))")
                case 503: throw KeyctlError(exit: .keyInvalid, message: response.message)
                case 404: throw KeyctlError(exit: .noKey, message: response.message)
                default: throw KeyctlError(exit: .failure, message: "unexpected answer: \(response.message)")
                }
                return
            }
        }
    }
}
