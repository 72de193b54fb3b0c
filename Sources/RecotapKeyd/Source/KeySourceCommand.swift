import Foundation
import Subprocess
import Synchronization

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// The key source (README "Fleets"): a command, given as an argv list and run without a
/// shell, whose standard output is the key — the convention of git credential helpers,
/// Docker credential helpers and AWS `credential_process`.
///
/// It runs as the daemon's own user, in the daemon's sandbox, with:
/// - a minimal environment (``environment(additions:inherited:)``), never the daemon's
///   own (no `NOTIFY_SOCKET`, `LISTEN_FDS`, `WATCHDOG_USEC`, proxies or test switches);
/// - no descriptor but its three standard ones: standard input is `/dev/null`, and
///   every other descriptor of the daemon — its sockets, its store — is closed in the
///   child (swift-subprocess closes them between fork and exec);
/// - its own process group, and a timeout after which it is killed (SIGKILL);
/// - standard output read up to ``outputLimit`` bytes: a command writing more is
///   killed and its output refused; standard error kept up to ``errorKept`` bytes for
///   the journal's summary (``KeySourceRun/errorSummary(redacting:)``), the rest
///   drained and counted.
public struct KeySourceCommand: Sendable, Equatable {
    /// The argv: `arguments[0]` is the program, a path or a name looked up in the
    /// command's `PATH`.
    public var arguments: [String]
    /// The whole environment the command gets.
    public var environment: [String: String]
    public var timeout: Duration

    /// The most standard output read: a key file's limit (README "Dropping in a new key").
    public static let outputLimit = SpoolFileReader.maximumSize
    /// The most standard error kept for the journal.
    public static let errorKept = 4096
    /// `PATH` unless the configuration sets one.
    public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    /// Passed on from the daemon's environment when set there (systemd sets the first
    /// four for a unit with `User=`; `CREDENTIALS_DIRECTORY` lets `systemd-creds cat`
    /// read the unit's credentials). Everything else must be named in
    /// `source.environment`.
    public static let inheritedNames = ["HOME", "USER", "LOGNAME", "SHELL", "CREDENTIALS_DIRECTORY", "TZ"]

    public init(arguments: [String], environment: [String: String], timeout: Duration) {
        self.arguments = arguments
        self.environment = environment
        self.timeout = timeout
    }

    /// The command's environment: `PATH` and `LANG`, the ``inheritedNames`` the daemon
    /// has, then `additions` (validated by the configuration), which win: `NAME=VALUE`
    /// sets a variable; a bare `NAME` passes the daemon's own on, when it has one (a
    /// token given to the unit by `Environment=` or `EnvironmentFile=`, kept out of the
    /// configuration file).
    public static func environment(additions: [String], inherited: [String: String]) -> [String: String] {
        var environment = ["PATH": defaultPath, "LANG": "C.UTF-8"]
        for name in inheritedNames {
            if let value = inherited[name] { environment[name] = value }
        }
        for addition in additions {
            if let equals = addition.firstIndex(of: "=") {
                environment[String(addition[..<equals])] = String(addition[addition.index(after: equals)...])
            } else if let value = inherited[addition] {
                environment[addition] = value
            }
        }
        return environment
    }

    /// What is wrong with the configuration now, for a warning at start (it fails only
    /// when it is needed, the worst moment to learn of a typo): the program not found,
    /// a bare `NAME` of `source.environment` the daemon does not have.
    public static func warnings(arguments: [String], additions: [String], inherited: [String: String]) -> [String] {
        var warnings: [String] = []
        let command = KeySourceCommand(
            arguments: arguments, environment: environment(additions: additions, inherited: inherited), timeout: .seconds(1))
        if let program = arguments.first, command.executablePath() == nil {
            warnings.append(
                "source.command: \(TerminalSafe.escape(program)) is not an executable file in PATH (\(TerminalSafe.escape(command.environment["PATH"] ?? defaultPath))); the key source will fail until it is")
        } else if let path = command.executablePath(), access(path, X_OK) != 0 {
            warnings.append("source.command: \(TerminalSafe.escape(path)) is not an executable file (for this user); the key source will fail until it is")
        }
        for name in additions where !name.contains("=") && inherited[name] == nil {
            warnings.append("source.environment: \(name) is to be passed on, but the daemon's environment has no \(name)")
        }
        return warnings
    }

    /// The program to run: `arguments[0]` when it names a path, else the first
    /// executable file of that name in the command's `PATH` (not the daemon's).
    public func executablePath() -> String? {
        guard let program = arguments.first, !program.isEmpty else { return nil }
        if program.contains("/") { return program }
        for directory in (environment["PATH"] ?? Self.defaultPath).split(separator: ":") where directory.hasPrefix("/") {
            let candidate = directory + "/" + program
            var status = stat()
            if stat(candidate, &status) == 0, status.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 {
                return String(candidate)
            }
        }
        return nil
    }

    /// Runs the command once. Throws only when it could not be started; everything it
    /// did once started (exit status, signal, timeout, too much output) is in the result.
    public func run() async throws(KeySourceError) -> KeySourceRun {
        guard let program = arguments.first, !program.isEmpty else {
            throw KeySourceError(message: "no command is configured (source.command is empty)")
        }
        guard let path = executablePath() else {
            throw KeySourceError(
                message: "\(TerminalSafe.escape(program)) is not an executable file in PATH (\(TerminalSafe.escape(environment["PATH"] ?? Self.defaultPath)))")
        }
        let options = {
            var options = PlatformOptions()
            // Its own process group, apart from the daemon's: a kill reaches everything
            // it started. Cancelled (at the daemon's shutdown), the group is killed.
            options.processGroupID = 0
            options.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .seconds(1))]
            return options
        }()
        let environmentEntries = environment.sorted { $0.key < $1.key }.map { Array(($0.key + "=" + $0.value).utf8) + [0] }
        let started = ContinuousClock.now
        let timeout = self.timeout
        let collected = Collected()
        let status: TerminationStatus
        do {
            status = try await withThrowingTaskGroup(of: TerminationStatus?.self) { group in
                group.addTask {
                    // In the task that reaps the command: its group id is given up at once.
                    defer { collected.ended() }
                    return try await Subprocess.run(
                        .path(FilePath(path)), arguments: Arguments(Array(arguments.dropFirst())),
                        environment: .custom(environmentEntries), platformOptions: options,
                        input: .none, output: .sequence, error: .sequence
                    ) { execution in
                        collected.started(execution.processIdentifier.value)
                        // Both streams end when the command ends (swift-subprocess
                        // cancels their reads then, whoever else holds the pipes) or
                        // when it closes them.
                        await withTaskGroup(of: Void.self) { readers in
                            readers.addTask {
                                do {
                                    for try await buffer in execution.standardOutput {
                                        if buffer.withUnsafeBytes({ collected.appendOutput($0) }) {
                                            collected.kill(.outputTooLarge)
                                        }
                                    }
                                } catch {}
                            }
                            readers.addTask {
                                do {
                                    for try await buffer in execution.standardError {
                                        buffer.withUnsafeBytes { collected.appendError($0) }
                                    }
                                } catch {}
                            }
                        }
                    }.terminationStatus
                }
                // The deadline holds until the command has ended, not only its output:
                // a command that closes both streams and lingers is killed too.
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    if !Task.isCancelled { collected.kill(.timedOut) }
                    return nil
                }
                var status: TerminationStatus?
                while let next = try await group.next() {
                    if let next {
                        status = next
                        group.cancelAll()
                    }
                }
                return status!
            }
        } catch let error as SubprocessError {
            throw KeySourceError(message: "\(TerminalSafe.escape(path)) could not be started: \(error)")
        } catch {
            throw KeySourceError(message: "\(TerminalSafe.escape(path)) could not be run: \(error)")
        }
        let duration = ContinuousClock.now - started
        let (output, errorHead, errorBytes, killed) = collected.snapshot()
        let termination: KeySourceRun.Termination
        switch (killed, status) {
        case (.timedOut?, _): termination = .timedOut
        case (.outputTooLarge?, _): termination = .outputTooLarge
        case (nil, .exited(let code)): termination = .exited(Int32(truncatingIfNeeded: code))
        case (nil, .signaled(let signal)): termination = .signalled(Int32(truncatingIfNeeded: signal))
        }
        return KeySourceRun(
            program: path, termination: termination, output: output, errorHead: errorHead, errorBytes: errorBytes,
            duration: duration)
    }

    /// What the command wrote, as it arrives from the two reader tasks.
    private final class Collected: Sendable {
        enum Killed: Sendable { case timedOut, outputTooLarge }
        private struct State {
            var output: [UInt8] = []
            var errorHead: [UInt8] = []
            var errorBytes = 0
            var killed: Killed?
            /// The command's process group (its pid) while it has not been reaped.
            var group: pid_t?
        }
        private let state = Mutex(State())

        /// The command runs as `pid`, leading its own group; killed at once if its
        /// deadline passed while it was being started.
        func started(_ pid: pid_t) {
            state.withLock { state in
                state.group = pid
                if state.killed != nil { _ = Glibc.kill(-pid, SIGKILL) }
            }
        }

        /// The command has been reaped: its group id may be reused from now on.
        func ended() { state.withLock { $0.group = nil } }

        /// Kills the command's process group (once), recording why; before it has
        /// started, `started(_:)` does.
        func kill(_ why: Killed) {
            state.withLock { state in
                guard state.killed == nil else { return }
                state.killed = why
                // Until swift-subprocess reaps the leader its pid (the group id) cannot
                // be reused; `ended()` runs in the task that reaps it, as it returns.
                if let group = state.group { _ = Glibc.kill(-group, SIGKILL) }
            }
        }

        /// Appends standard output; true once it holds more than ``outputLimit`` bytes.
        func appendOutput(_ bytes: UnsafeRawBufferPointer) -> Bool {
            state.withLock { state in
                let room = KeySourceCommand.outputLimit + 1 - state.output.count
                state.output += bytes.prefix(max(0, room))
                return state.output.count > KeySourceCommand.outputLimit
            }
        }

        func appendError(_ bytes: UnsafeRawBufferPointer) {
            state.withLock { state in
                state.errorBytes += bytes.count
                let room = KeySourceCommand.errorKept - state.errorHead.count
                if room > 0 { state.errorHead += bytes.prefix(room) }
            }
        }

        func snapshot() -> ([UInt8], [UInt8], Int, Killed?) {
            state.withLock { ($0.output, $0.errorHead, $0.errorBytes, $0.killed) }
        }
    }
}

/// A key source command that could not be started.
public struct KeySourceError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// One run of the key source command. Its standard output is a secret: it is never
/// printed; ``errorSummary(redacting:)`` is what the journal gets of standard error.
public struct KeySourceRun: Sendable {
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
        /// Killed at `source.timeout`.
        case timedOut
        /// Killed for writing more than ``KeySourceCommand/outputLimit`` bytes.
        case outputTooLarge
    }

    public var program: String
    public var termination: Termination
    /// Standard output, at most ``KeySourceCommand/outputLimit`` + 1 bytes.
    public var output: [UInt8]
    /// The first ``KeySourceCommand/errorKept`` bytes of standard error.
    public var errorHead: [UInt8]
    /// All the bytes written to standard error.
    public var errorBytes: Int
    public var duration: Duration

    /// Whether the command ended by itself with status 0.
    public var succeeded: Bool { termination == .exited(0) }

    /// How it ended, in words: "exit status 2", "killed by signal 9", "timed out after 30s".
    public func describeTermination(timeout: Duration) -> String {
        switch termination {
        case .exited(let code): "exit status \(code)"
        case .signalled(let signal): "killed by signal \(signal)"
        case .timedOut: "timed out after \(DurationParsing.format(timeout)) and was killed"
        case .outputTooLarge: "wrote more than \(KeySourceCommand.outputLimit) bytes to standard output and was killed"
        }
    }

    /// Standard error for the journal, one line: redacted (``Redaction``), control
    /// characters escaped, at most `limit` characters; `nil` when there was none.
    public func errorSummary(redacting secrets: [String], limit: Int = 600) -> String? {
        guard errorBytes > 0 else { return nil }
        let text = String(decoding: errorHead, as: UTF8.self)
        var lines = Redaction.redact(text, secrets: secrets + Redaction.tokens(of: output), cut: errorBytes > errorHead.count)
            .split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if lines.isEmpty { lines = ["(only whitespace)"] }
        var summary = TerminalSafe.escape(lines.joined(separator: " | "))
        if summary.count > limit { summary = String(summary.prefix(limit)) + "…" }
        if errorBytes > errorHead.count { summary += " (\(errorBytes) bytes in all)" }
        return summary
    }
}

/// Takes keys out of text that is about to be logged: the key source's standard error.
public enum Redaction {
    /// Shortest run of key characters taken to be a secret whatever it is.
    public static let longTokenLength = 20
    public static let replacement = "[redacted]"

    /// `text` with every occurrence of the `secrets` (8 characters or more) replaced —
    /// as they are, JSON-escaped and percent-encoded — then every run of
    /// ``longTokenLength`` or more letters, digits and `-_+/=.` holding both letters
    /// and digits (what API keys, tokens and hashes look like); `cut`: the text was
    /// truncated, so its last word may be the start of a secret and is replaced,
    /// back to the last whitespace.
    public static func redact(_ text: String, secrets: [String], cut: Bool) -> String {
        var text = text
        if cut {
            let end = text.lastIndex(where: \.isWhitespace).map { text.index(after: $0) } ?? text.startIndex
            text = String(text[..<end]) + replacement
        }
        // Longest first: a secret inside another does not leave the other's rest behind.
        let forms = Set(secrets.filter { $0.count >= KeyFileContent.minimumLength }.flatMap(forms(of:)))
        for form in forms.sorted(by: { ($0.count, $0) > ($1.count, $1) }) {
            text = text.replacingOccurrences(of: form, with: replacement)
        }
        var out = ""
        var run = ""
        func flush() {
            let letters = run.contains { $0.isLetter }
            let digits = run.contains { $0.isNumber }
            if run.count >= longTokenLength && letters && digits {
                out += replacement
            } else {
                out += run
            }
            run = ""
        }
        for character in text {
            if character.isASCII && (character.isLetter || character.isNumber || "-_+/=.".contains(character)) {
                run.append(character)
            } else {
                flush()
                out.append(character)
            }
        }
        flush()
        return out
    }

    /// A secret as a program may print it: itself, JSON-escaped, percent-encoded.
    static func forms(of secret: String) -> [String] {
        var json = ""
        for character in secret {
            switch character {
            case "\\": json += "\\\\"
            case "\"": json += "\\\""
            case "/": json += "\\/"
            default: json.append(character)
            }
        }
        // Everything but letters and digits encoded, and RFC 3986's unreserved `-._~` kept
        // (encodeURIComponent, Python's quote, curl --data-urlencode).
        let percent = secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? secret
        let unreserved = secret.addingPercentEncoding(
            withAllowedCharacters: CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? secret
        return [secret, json, json.replacingOccurrences(of: "\\/", with: "/"), percent, unreserved]
    }

    /// The whitespace-separated words of a command's standard output, as candidates
    /// for the key (whatever the output's shape, none of it may reach the journal).
    public static func tokens(of output: [UInt8]) -> [String] {
        String(decoding: output, as: UTF8.self).split(whereSeparator: { $0.isWhitespace || $0 == "\u{FEFF}" })
            .map(String.init)
    }
}
