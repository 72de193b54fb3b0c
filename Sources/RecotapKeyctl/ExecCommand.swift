import ArgumentParser
import Foundation
import RecotapKeyd
#if canImport(Glibc)
import Glibc
#endif

/// `exec [--env NAME | --file PATH] [--on-rotate restart|SIGNAL] -- CMD ARGS…`: runs a
/// program that reads the key once, with the key in its environment or in a file, and
/// follows rotations by the long poll — restarting it, or signalling it after the file
/// was rewritten (README "Consumers").
struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command with the key (environment or file) and restart or signal it at each rotation.",
        discussion: """
            Starts CMD with the key in the environment variable --env (default RECOTAP_API_KEY) or in the file \
            --file (mode 0600, rewritten atomically at each rotation), then follows the key with long polls. \
            At each new version: --on-rotate restart (the default) stops CMD with SIGTERM and starts it again \
            with the new key; --on-rotate HUP (or another signal name, with --file) rewrites the file and sends \
            the signal. An invalidation changes nothing (no restart into a dead key). SIGTERM, SIGINT and SIGHUP \
            are passed to CMD; the exit status is CMD's (128+N when a signal N ended it). The key is never printed.
            """)
    @OptionGroup var options: ClientOptions
    @Option(help: "Give CMD the key in this environment variable (default RECOTAP_API_KEY unless --file).") var env: String?
    @Option(help: "Give CMD the key in this file (0600, rewritten atomically at each rotation).") var file: String?
    @Option(name: .customLong("on-rotate"), help: "restart, or a signal name to send (HUP, USR1, …; needs --file).")
    var onRotate = "restart"
    @Option(name: .customLong("stop-timeout"), help: "Seconds CMD has to exit after SIGTERM at a restart before SIGKILL.")
    var stopTimeout: Double = 10
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, after --.") var command: [String] = []

    static let signals: [String: Int32] = [
        "HUP": SIGHUP, "USR1": SIGUSR1, "USR2": SIGUSR2, "TERM": SIGTERM, "INT": SIGINT, "QUIT": SIGQUIT,
        "WINCH": SIGWINCH, "ALRM": SIGALRM,
    ]

    var rotationSignal: Int32? {
        guard onRotate != "restart" else { return nil }
        let name = onRotate.uppercased()
        return Self.signals[name.hasPrefix("SIG") ? String(name.dropFirst(3)) : name]
    }

    var program: [String] { command.first == "--" ? Array(command.dropFirst()) : command }

    func validate() throws {
        guard !program.isEmpty else { throw ValidationError("give the command to run after --") }
        if env != nil, file != nil { throw ValidationError("--env and --file exclude each other") }
        try validateTimeout(stopTimeout)
        if let env, env.isEmpty || env.contains("=") { throw ValidationError("--env needs a variable name") }
        if onRotate != "restart" {
            guard rotationSignal != nil else {
                throw ValidationError("--on-rotate must be restart or a signal name (\(Self.signals.keys.sorted().joined(separator: ", ")))")
            }
            guard file != nil else {
                throw ValidationError("--on-rotate \(onRotate) needs --file: a signalled process cannot see a new environment")
            }
        }
    }

    /// What happens next, from any of the sources the loop waits on.
    enum Event: Sendable {
        /// CMD exited (not yet reaped).
        case exited(pid: pid_t)
        case rotated(Wire.Key)
        case signal(Int32)
        /// A restart's SIGTERM was sent this long ago to `pid`: time for SIGKILL.
        case stopOverdue(pid: pid_t)
    }

    func run() async throws {
        var exitStatus: Int32 = 0
        try await runReportingErrors { () throws(KeyctlError) in
            let client = try await options.client()
            var key = try await fetch(client)
            try deliver(key)
            let (events, sink) = AsyncStream<Event>.makeStream()

            // Signals for CMD: handled here, passed on. SIGPIPE, ignored by SwiftNIO in
            // this process, goes back to its default for CMD too.
            let forwarded: [Int32] = [SIGTERM, SIGINT, SIGHUP]
            var sources: [any DispatchSourceSignal] = []
            for number in forwarded {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { sink.yield(.signal(number)) }
                source.resume()
                sources.append(source)
            }
            defer { sources.forEach { $0.cancel() } }

            let startVersion = key.version
            let poller = Task {
                var version = startVersion
                while !Task.isCancelled {
                    guard let response = try? await client.request(
                        .GET, "/v1/key?wait=300&after=\(version)", timeout: .seconds(330))
                    else {
                        try? await Task.sleep(for: .seconds(5))  // the daemon restarting: ask again
                        continue
                    }
                    // Decoded raw: the key goes to CMD exactly (no escaping for a terminal).
                    guard response.status == 200, let next = WireJSON.decode(Wire.Key.self, from: response.body) else {
                        if response.status != 304 {
                            // A new version that is not served (invalid, sealed): wait for the next one.
                            if let seen = response.header("X-Key-Version").flatMap({ Int64($0) }) { version = seen }
                            try? await Task.sleep(for: .seconds(1))
                        }
                        continue
                    }
                    version = next.version
                    sink.yield(.rotated(next))
                }
            }
            defer { poller.cancel() }

            let reset = forwarded + [SIGPIPE]
            var child = try spawn(key, resetting: reset, sink: sink)
            var restarting = false
            var stopping = false
            for await event in events {
                switch event {
                case .signal(let number):
                    // SIGHUP is passed on (a reload, for CMD); TERM and INT end the run.
                    if number != SIGHUP { stopping = true }
                    kill(child, number)
                case .rotated(let next):
                    guard !stopping else { continue }
                    do throws(KeyctlError) {
                        try deliver(next)
                    } catch {
                        // CMD keeps running with the key it has; the next rotation tries again.
                        FileHandle.standardError.write(Data("recotap-keyctl: \(error.message); \(TerminalSafe.escape(program[0])) keeps the key it has\n".utf8))
                        continue
                    }
                    key = next
                    if let number = rotationSignal {
                        kill(child, number)
                    } else if !restarting {
                        restarting = true
                        kill(child, SIGTERM)
                        let pid = child
                        let grace = Duration.milliseconds(Saturating.int64(stopTimeout * 1000) ?? 10_000)
                        Task {
                            try? await Task.sleep(for: grace)
                            sink.yield(.stopOverdue(pid: pid))
                        }
                    }
                case .stopOverdue(let pid):
                    // Still the same child, still not gone (not reaped: the pid is its own).
                    if pid == child, restarting { kill(pid, SIGKILL) }
                case .exited(let pid):
                    // Reaped only now: until here a kill() reaches the zombie, never a
                    // process that reused its pid.
                    var status: Int32 = 0
                    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
                    guard pid == child else { continue }
                    if restarting, !stopping {
                        restarting = false
                        child = try spawn(key, resetting: reset, sink: sink)
                        continue
                    }
                    exitStatus = Self.exitCode(status)
                    return
                }
            }
        }
        throw ExitCode(exitStatus)
    }

    private func fetch(_ client: DaemonClient) async throws(KeyctlError) -> Wire.Key {
        let response = try await client.request(.GET, "/v1/key")
        try requireKey(response)
        guard let key = WireJSON.decode(Wire.Key.self, from: response.body) else {
            throw KeyctlError(exit: .failure, message: "unexpected answer: \(response.message)")
        }
        return key
    }

    /// Writes the key where CMD reads it (with --file): a new 0600 file renamed over the old.
    private func deliver(_ key: Wire.Key) throws(KeyctlError) {
        guard let file else { return }
        do {
            try AtomicFile.replace(
                file, with: Array(key.key.utf8), mode: 0o600, sync: true, temporary: file + ".tmp-\(getpid())")
        } catch {
            throw KeyctlError(exit: .failure, message: "cannot write the key: \(error.description)")
        }
    }

    /// Starts CMD (found on PATH) with the key in its environment when asked, the
    /// forwarded signals back at their defaults; its exit arrives as an event.
    private func spawn(_ key: Wire.Key, resetting signals: [Int32], sink: AsyncStream<Event>.Continuation) throws(KeyctlError) -> pid_t {
        var environment = ProcessInfo.processInfo.environment
        if file == nil { environment[env ?? "RECOTAP_API_KEY"] = key.key }
        environment["RECOTAP_KEY_VERSION"] = String(key.version)
        environment["RECOTAP_KEY_FINGERPRINT"] = key.fingerprint
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for number in signals { sigaddset(&defaults, number) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // libdispatch blocks the signals its sources watch; the child must not inherit that.
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        // Nothing of this process but stdin, stdout and stderr: the HTTP client's
        // connections to keyd.sock (not close-on-exec) would let CMD talk to the daemon
        // as this process's uid.
        Self.closeOnExec(from: 3)
        let argv = program.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, program[0], nil, &attributes, argv, envp)
        guard result == 0 else {
            throw KeyctlError(exit: .failure, message: "cannot run \(TerminalSafe.escape(program[0])): \(String(cString: strerror(result)))")
        }
        let child = pid
        DispatchQueue.global().async {
            var info = siginfo_t()
            while waitid(P_PID, id_t(child), &info, WEXITED | WNOWAIT) < 0, errno == EINTR {}
            sink.yield(.exited(pid: child))
        }
        return child
    }

    /// Marks every descriptor from `lowest` up close-on-exec (SwiftNIO opens its sockets
    /// and its epoll instance without it).
    static func closeOnExec(from lowest: Int32) {
        guard let directory = opendir("/proc/self/fd") else { return }
        defer { closedir(directory) }
        let own = dirfd(directory)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let fd = Int32(name), fd >= lowest, fd != own else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    /// The shell's convention: the exit code, or 128 + the signal that ended it.
    static func exitCode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}
