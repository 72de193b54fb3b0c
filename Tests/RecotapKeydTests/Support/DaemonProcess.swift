import Foundation
import Synchronization

/// A datagram socket standing in for systemd's notify socket: the daemon under test
/// gets its path as `NOTIFY_SOCKET`, and the test reads what arrived.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes.prefix(raw.count - 1))
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    deinit { close(fd) }

    /// The next message, or nil after `timeout`.
    func receive(timeout: Duration) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, Int32(timeout.components.seconds * 1000))
        guard ready > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    /// Messages until one contains `assignment` (e.g. `READY=1`); all of them.
    func waitFor(_ assignment: String, timeout: Duration = .seconds(60)) -> [String]? {
        var messages: [String] = []
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let message = receive(timeout: .seconds(1)) else { continue }
            messages.append(message)
            if message.split(separator: "\n").contains(Substring(assignment)) { return messages }
        }
        return nil
    }
}

/// The real `recotap-keyd` binary, started as a child process.
final class DaemonProcess: @unchecked Sendable {
    let process = Process()
    private let errorPipe = Pipe()
    private let collected = Collected()

    final class Collected: Sendable {
        let data = Mutex(Data())
        func append(_ more: Data) { data.withLock { $0.append(more) } }
        var text: String { data.withLock { String(decoding: $0, as: UTF8.self) } }
    }

    /// `wrapper`: a command that runs the daemon, e.g. `setpriv --reuid=65534 …`;
    /// `executable`: another copy of the binary.
    init(
        arguments: [String], environment: [String: String], wrapper: [String] = [],
        executable: String = productsDirectory + "/recotap-keyd"
    ) throws {
        if let command = wrapper.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = Array(wrapper.dropFirst()) + [executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("RECOTAP_KEYD_") && $0.key != "NOTIFY_SOCKET" && $0.key != "JOURNAL_STREAM" }
        env.merge(environment) { _, new in new }
        process.environment = env
        process.standardError = errorPipe
        process.standardOutput = errorPipe
        let collected = self.collected
        errorPipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            collected.append(data)
        }
        try process.run()
    }

    var output: String { collected.text }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits for the exit (killing the process after `timeout`) and returns its status.
    func waitForExit(timeout: Duration = .seconds(30)) -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            usleep(20_000)
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        process.waitUntilExit()
        usleep(100_000)  // let the pipe drain
        errorPipe.fileHandleForReading.readabilityHandler = nil
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// A configuration file whose every path is under `directory`.
func writeTestConfiguration(
    in directory: TemporaryDirectory, extra: String = "",
    access: String = "access:\n  readers: { groups: [] }\n  admins: { groups: [] }", socketMode: String = "0660"
) throws -> String {
    try directory.write("keyd.yaml", """
        api:
          base_url: http://127.0.0.1:9/api/v1
        spool:
          directory: spool
        store:
          path: state/keyd.sqlite3
        sockets:
          api: run/keyd.sock
          credential: run/credential.sock
          generation_file: run/generation
          mode: "\(socketMode)"
        \(access.replacingOccurrences(of: "\n", with: "\n        "))
        log:
          target: console
          level: info
        \(extra)
        """)
}
