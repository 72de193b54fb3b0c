import Foundation
import RecotapAPIMock
import Synchronization

@testable import RecotapKeyd

/// What a child process printed and how it ended.
struct CommandResult: Sendable {
    var status: Int32
    var stdout: Data
    var stderr: String
    var output: String { String(decoding: stdout, as: UTF8.self) }
}

/// Runs blocking work (a child process, a socket read) on a GCD thread: Swift
/// Testing runs tests in parallel on a cooperative pool as small as the machine's
/// core count, and one blocked pool thread would stall every other test.
func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
    }
}

/// ``runCommandBlocking(_:input:timeout:)`` off the cooperative pool.
func runCommand(_ arguments: [String], input: Data? = nil, timeout: Duration = .seconds(60)) async throws -> CommandResult {
    try await offload { try runCommandBlocking(arguments, input: input, timeout: timeout) }
}

/// Runs a command to its end (killed after `timeout`), feeding `input` to its stdin.
func runCommandBlocking(_ arguments: [String], input: Data? = nil, timeout: Duration = .seconds(60)) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0])
    process.arguments = Array(arguments.dropFirst())
    let out = Pipe()
    let err = Pipe()
    let stdin = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input == nil ? FileHandle.nullDevice : stdin
    try process.run()
    if let input {
        stdin.fileHandleForWriting.write(input)
        try? stdin.fileHandleForWriting.close()
    }
    let collected = Mutex((Data(), Data()))
    let group = DispatchGroup()
    for (pipe, isOut) in [(out, true), (err, false)] {
        group.enter()
        DispatchQueue.global().async {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            collected.withLock { if isOut { $0.0 = data } else { $0.1 = data } }
            group.leave()
        }
    }
    let deadline = ContinuousClock.now + timeout
    while process.isRunning && ContinuousClock.now < deadline { usleep(5_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
    group.wait()
    let (stdout, stderr) = collected.withLock { $0 }
    return CommandResult(status: process.terminationStatus, stdout: stdout, stderr: String(decoding: stderr, as: UTF8.self))
}

/// `setpriv` arguments that run a command as nobody, with `groups` as its only
/// supplementary groups.
func asNobody(groups: [UInt32] = []) -> [String] {
    ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534"]
        + (groups.isEmpty ? ["--clear-groups"] : ["--groups=" + groups.map(String.init).joined(separator: ",")])
}

let canDropToNobody = geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
let haveCurl = FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")
let haveSocat = FileManager.default.isExecutableFile(atPath: "/usr/bin/socat")

/// One answer read by real `curl --unix-socket`.
struct CurlResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: JSONValue? { JSONValue.parse(text) }
}

/// `curl --unix-socket SOCKET http://localhost/PATH`, optionally as another user.
func curl(
    _ socket: String, _ path: String, method: String = "GET", headers: [String] = [], body: String? = nil,
    as wrapper: [String] = [], timeout: Duration = .seconds(30)
) async throws -> CurlResponse {
    var arguments = wrapper + ["/usr/bin/curl", "-sS", "-i", "--max-time", "\(timeout.components.seconds)", "--unix-socket", socket, "-X", method]
    for header in headers { arguments += ["-H", header] }
    if body != nil { arguments += ["--data-binary", "@-"] }
    arguments.append("http://localhost" + path)
    let result = try await runCommand(arguments, input: body.map { Data($0.utf8) }, timeout: timeout + .seconds(5))
    guard result.status == 0 else { throw TestHTTPError.malformed("curl exited \(result.status): \(result.stderr)") }
    let raw = result.stdout
    guard let split = raw.range(of: Data("\r\n\r\n".utf8)) else {
        throw TestHTTPError.malformed("no header end in curl output: \(result.output)")
    }
    let head = String(decoding: raw[raw.startIndex..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
    let status = Int(head.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
    var fields: [String: String] = [:]
    for line in head.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return CurlResponse(status: status, headers: fields, body: Data(raw[split.upperBound...]))
}

/// A raw client on a Unix stream socket, for what curl will not send.
final class UnixClient: @unchecked Sendable {
    let fd: Int32

    /// `abstractName`: bind the client to this abstract address first (as systemd does
    /// for `LoadCredential=`).
    init(path: String, abstractName: String? = nil) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        if let abstractName {
            var local = sockaddr_un()
            local.sun_family = sa_family_t(AF_UNIX)
            let bytes = [UInt8(0)] + Array(abstractName.utf8)
            withUnsafeMutableBytes(of: &local.sun_path) { $0.copyBytes(from: bytes) }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
            let rc = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            guard rc == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    deinit { close(fd) }

    func send(_ text: String) { send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Everything until the peer closes (or `timeout` passes: then `closed` is false).
    func readToEnd(timeout: Duration = .seconds(10)) -> (data: [UInt8], closed: Bool) {
        var data: [UInt8] = []
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return (data, true) }
            data += buffer[0..<count]
        }
        return (data, false)
    }

    /// ``readToEnd(timeout:)`` off the cooperative pool.
    func read(timeout: Duration = .seconds(10)) async throws -> (data: [UInt8], closed: Bool) {
        try await offload { self.readToEnd(timeout: timeout) }
    }

    func text() async throws -> String { String(decoding: try await read().data, as: UTF8.self) }
}

/// The real `recotap-keyd` binary serving from a temporary directory, checking keys
/// against an in-process mock API.
final class ServedDaemon {
    let dir: TemporaryDirectory
    let mock: MockRecotapAPI
    let daemon: DaemonProcess
    let notify: NotifySocket
    var api: String { dir.file("run/keyd.sock") }
    var credential: String { dir.file("run/credential.sock") }
    var spool: String { dir.file("spool") }

    /// `launcher`: runs the daemon (e.g. the socket-activation helper).
    init(
        validKeys: [String] = [], access: String? = nil, socketMode: String = "0660", extra: String = "",
        launcher: [String] = [], environment: [String: String] = [:], directory: TemporaryDirectory? = nil
    ) async throws {
        // `directory`: another daemon's, to start on what it left (its store, its spool).
        let dir = try directory ?? TemporaryDirectory()
        self.dir = dir
        chmod(dir.path, 0o755)
        mock = try await MockRecotapAPI.start()
        mock.setValidKeys(validKeys)
        let config = try access.map { try writeTestConfiguration(in: dir, extra: extra, access: $0, socketMode: socketMode) }
            ?? writeTestConfiguration(in: dir, extra: extra, socketMode: socketMode)
        unlink(dir.file("notify.sock"))  // left by an earlier daemon in `directory`
        notify = try NotifySocket(path: dir.file("notify.sock"))
        daemon = try DaemonProcess(
            arguments: ["--config", config, "--api-base-url", mock.baseURL, "--api-timeout", "2s"],
            environment: environment.merging(["NOTIFY_SOCKET": notify.path]) { _, new in new }, wrapper: launcher)
        let notify = self.notify
        guard try await offload({ notify.waitFor("READY=1", timeout: .seconds(30)) != nil }) else {
            throw TestHTTPError.malformed("no READY=1: \(daemon.output)")
        }
    }

    /// Drops `key` into the spool the safe way and waits until it is served.
    func activate(_ key: String) async throws {
        let name = try SpoolWriter.write(APIKey(secret: key), into: spool)
        let fingerprint = APIKey.fingerprint(of: key)
        guard try await eventually(timeout: .seconds(15), { (try? await self.curl("/v1/key").headers["x-key-fingerprint"]) == fingerprint })
        else {
            throw TestHTTPError.malformed("\(name) was not activated: \(daemon.output)")
        }
    }

    func curl(
        _ path: String, method: String = "GET", headers: [String] = [], body: String? = nil, as wrapper: [String] = [],
        timeout: Duration = .seconds(30)
    ) async throws -> CurlResponse {
        try await RecotapKeydTests.curl(api, path, method: method, headers: headers, body: body, as: wrapper, timeout: timeout)
    }

    /// Waits (off the pool) until the daemon's output contains `text`.
    func logged(_ text: String, timeout: Duration = .seconds(10)) async throws -> Bool {
        try await eventually(timeout: timeout) { self.daemon.output.contains(text) }
    }

    /// SIGTERM, then the mock's shutdown; returns the daemon's exit status.
    func finish() async -> Int32 {
        daemon.signal(SIGTERM)
        let daemon = self.daemon
        let status = (try? await offload { daemon.waitForExit() }) ?? -1
        try? await mock.shutdown()
        return status
    }
}
