import ArgumentParser
import Foundation
import Logging
import RecotapKeyd
#if canImport(Glibc)
import Glibc
#endif

/// `verify-credential NAME`, for a consumer unit's `ExecStartPre=`: systemd starts a
/// `LoadCredential=` unit even when the socket gave it nothing, so the unit checks
/// first and fails with a message instead of running on an empty key.
struct VerifyCredential: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-credential",
        abstract: "Fail unless $CREDENTIALS_DIRECTORY/NAME holds a key recotap-keyd does not know to be invalid.",
        discussion: """
            For ExecStartPre= in a unit with LoadCredential=NAME:/run/recotap-keyd/credential.sock. Exit 0 \
            when the credential holds a key (asking recotap-keyd's /v1/status, when the socket can be reached, \
            whether that key is the active one and not invalid); 3 when the credential is missing or empty; 4 \
            when it holds the active key and recotap-keyd knows it to be invalid. Never prints the key.
            """)
    @OptionGroup var options: ClientOptions
    @Argument(help: "The credential's name (the ID of LoadCredential=ID:…).") var name: String

    func run() async throws {
        try await runReportingErrors { () throws(KeyctlError) in
            guard let directory = ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
                throw KeyctlError(exit: .noKey, message: "no $CREDENTIALS_DIRECTORY: run this from a unit with LoadCredential=\(name):…")
            }
            guard !name.contains("/"), !name.isEmpty else {
                throw KeyctlError(exit: .failure, message: "\(TerminalSafe.escape(name)) is not a credential name")
            }
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                throw KeyctlError(exit: .noKey, message: "credential \(name) is missing (\(path)): recotap-keyd had no key to give, or refused this unit (access.units)")
            }
            let key: APIKey
            switch KeyFileContent.parse(Array(data)) {
            case .key(let secret): key = APIKey(secret: secret)
            case .empty:
                throw KeyctlError(
                    exit: .noKey,
                    message: "credential \(name) is empty: recotap-keyd had no usable key when this unit started (see its status); not starting on an empty key")
            case .malformed(let why):
                throw KeyctlError(exit: .failure, message: "credential \(name) holds no usable key: \(why)")
            }
            // What recotap-keyd knows, if it can be asked (anyone who can connect may
            // read /v1/status); a consumer outside the socket's group just gets the check above.
            guard let client = try? await options.client(), let response = try? await client.request(.GET, "/v1/status"),
                let status = response.decoded(Wire.Status.self)
            else {
                print("credential \(name) holds key \(key.fingerprint)")
                return
            }
            if status.fingerprint == key.fingerprint, status.state == KeyState.invalid.rawValue {
                throw KeyctlError(
                    exit: .keyInvalid,
                    message: "credential \(name) holds key \(key.fingerprint), which recotap-keyd knows to be invalid: drop a new key into its spool")
            }
            if status.fingerprint == key.fingerprint {
                print("credential \(name) holds key \(key.fingerprint), the active one (\(status.state))")
            } else {
                print("credential \(name) holds key \(key.fingerprint); recotap-keyd's active key is \(status.fingerprint ?? "none")")
            }
        }
    }
}

/// `restart-consumer UNIT`, run by `recotap-keyd-restart@UNIT.service` when the
/// generation file changes: after a randomized delay, restarts UNIT if a valid key it
/// has not been restarted for is active, and records the outcome in the journal
/// (CONSUMER_RESTARTED).
struct RestartConsumer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart-consumer",
        abstract: "Restart a unit for a newly activated valid key (run by recotap-keyd-restart@UNIT.service).",
        discussion: """
            Reads the generation file; if the key it names is valid and UNIT was not restarted for that version \
            yet, waits a random delay between --delay-min and --delay-max (so a fleet does not restart every \
            consumer at once), reads the file again (a burst of rotations ends in one restart, into the newest \
            key), and runs systemctl --mode UNIT, then reads the file once more in case a rotation landed \
            meanwhile. An invalidation or an unverified key restarts nothing. The version restarted for is kept \
            in --state-directory; the outcome goes to the journal as CONSUMER_RESTARTED.
            """)
    @Argument(help: "The unit to restart, e.g. billing.service.") var unit: String
    @Option(help: "try-restart (the default: a new start reads the key anew) or try-reload-or-restart (for a unit whose ExecReload= re-reads it).")
    var mode = "try-restart"
    @Option(help: "The shortest delay before the restart, e.g. 0s, 2s.") var delayMin = "0s"
    @Option(help: "The longest delay before the restart.") var delayMax = "5s"
    @Option(help: "The generation file.") var generationFile = "/run/recotap-keyd/generation"
    @Option(help: "Where the version each unit was restarted for is kept (default $STATE_DIRECTORY, $RUNTIME_DIRECTORY).")
    var stateDirectory: String?
    @Option(help: "The systemctl to run.") var systemctl = "systemctl"

    func validate() throws {
        guard ["try-reload-or-restart", "try-restart"].contains(mode) else {
            throw ValidationError("--mode must be try-reload-or-restart or try-restart (got \(mode))")
        }
        guard !unit.isEmpty, !unit.hasPrefix("-"), unit.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != "/" }) else {
            throw ValidationError("\(TerminalSafe.escape(unit)) is not a unit name")
        }
        _ = try delays()
    }

    private func delays() throws -> (Duration, Duration) {
        guard let low = DurationParsing.parse(delayMin), let high = DurationParsing.parse(delayMax),
            low >= .zero, high >= low, high <= .seconds(3600)
        else {
            throw ValidationError("--delay-min and --delay-max must be durations with 0 ≤ min ≤ max ≤ 1h (got \(delayMin), \(delayMax))")
        }
        return (low, high)
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let identifier = "recotap-keyd-restart"
        let logger = Logger(label: identifier) { _ in
            LoggingSetup.stderrIsJournal(environment: environment)
                ? JournalLogHandler(identifier: identifier, level: .info) as any LogHandler
                : ConsoleLogHandler(label: identifier, level: .info)
        }
        let file = GenerationFile(path: generationFile)
        let directory = stateDirectory ?? environment["STATE_DIRECTORY"] ?? environment["RUNTIME_DIRECTORY"]
        let stateFile = directory.map { $0 + "/" + unit + ".version" }
        var metadata: Logger.Metadata = ["unit": .string(unit), "restart_mode": .string(mode)]

        guard let first = file.read() else {
            logger.warning("cannot read the generation file \(generationFile): \(unit) not restarted", metadata: metadata)
            return
        }
        guard first.state == KeyState.valid.rawValue else {
            logger.info("key \(first.fingerprint) is \(first.state): \(unit) not restarted (only a valid key restarts consumers)", metadata: metadata)
            return
        }
        if let last = Self.restartedFor(stateFile), last == first.version {
            logger.info("\(unit) was restarted for version \(first.version) already", metadata: metadata)
            return
        }
        let (low, high) = try delays()
        let span = (high - low).milliseconds
        let delay = low + .milliseconds(span > 0 ? Int64.random(in: 0...span) : 0)
        metadata["delay_ms"] = .stringConvertible(delay.milliseconds)
        try await Task.sleep(for: delay)

        // A burst of rotations: act on the newest. A rotation landing while systemctl
        // runs (systemd does not start this unit again while it is active) is caught by
        // reading the file again afterwards: at most a few rounds.
        for _ in 0..<3 {
            guard let current = file.read(), current.state == KeyState.valid.rawValue else {
                logger.info("the key is not valid now: \(unit) not restarted", metadata: metadata)
                return
            }
            if let last = Self.restartedFor(stateFile), last == current.version { return }
            metadata[LogKey.keyVersion] = .stringConvertible(current.version)
            metadata[LogKey.keyFingerprint] = .string(current.fingerprint)
            let status = Self.run([systemctl, mode, unit])
            let result = status == 0 ? "done" : "failed (systemctl exit status \(status))"
            metadata["result"] = .string(result)
            if status == 0, let stateFile {
                try? Data("\(current.version)\n".utf8).write(to: URL(fileURLWithPath: stateFile), options: .atomic)
            }
            logger.event(
                .consumerRestarted,
                "\(mode) \(unit) for key \(current.fingerprint) (version \(current.version)): \(result)",
                metadata: metadata)
            if status != 0 { throw ExitCode(1) }
        }
    }

    private static func restartedFor(_ path: String?) -> Int64? {
        guard let path, let data = FileManager.default.contents(atPath: path) else { return nil }
        return Int64(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Runs `arguments` (the first found on `PATH` unless it has a slash); its exit status, 127 when it cannot start.
    private static func run(_ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        do {
            try process.run()
        } catch {
            return 127
        }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
