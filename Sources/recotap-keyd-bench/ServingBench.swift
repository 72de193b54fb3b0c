import Foundation
import RecotapAPIMock
import RecotapKeyd
import Synchronization

/// `GET /v1/key` on keyd.sock: the `recotap-keyd` binary next to this one, serving a
/// key, driven by `connections` keep-alive clients (one thread each, blocking I/O,
/// one request in flight per connection). Reports requests per second, latency
/// percentiles and the daemon's resident memory.
struct ServingBench {
    let requests: Int
    let connections: [Int]

    func run() async throws {
        let bench = try await BenchDaemon.start()
        defer { bench.stop() }
        let (key, mock, socket, directory, daemon) = (bench.key, bench.mock, bench.socket, bench.directory, bench.process)
        print(String(format: "daemon RSS after start: %.1f MiB", Self.residentMiB(daemon.processIdentifier)))
        for count in connections {
            let (rps, latencies) = try measure(socket: socket, connections: count, key: key)
            func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
            print(String(
                format: "GET /v1/key, %d keep-alive connection(s), %d requests: %.0f req/s  latency ms p50 %.3f  p99 %.3f  max %.3f",
                count, latencies.count, rps, percentile(0.5), percentile(0.99), latencies.last ?? 0))
            print(String(format: "daemon RSS after them: %.1f MiB", Self.residentMiB(daemon.processIdentifier)))
        }
        try measureLongPoll(socket: socket, spool: directory + "/spool", mock: mock)
        try await mock.shutdown()
    }

    /// From the rename of a new key into the spool to the answer of a long poll that
    /// waited for it (read, verified against the mock, committed, published).
    private func measureLongPoll(socket: String, spool: String, mock: MockRecotapAPI) throws {
        var latencies: [Double] = []
        for round in 0..<50 {
            let key = "rtk_long_poll_bench_\(round)_" + UUID().uuidString
            mock.addValidKey(key)
            let client = try KeepAliveClient(path: socket)
            let version = try client.get().version
            let answered = DispatchSemaphore(value: 0)
            let result = Mutex<(Int, ContinuousClock.Instant)?>(nil)
            Thread.detachNewThread {
                let answer = try? client.get(path: "/v1/key?wait=30&after=\(version)")
                result.withLock { $0 = (answer?.status ?? 0, ContinuousClock.now) }
                answered.signal()
            }
            usleep(50_000)
            try Data(key.utf8).write(to: URL(fileURLWithPath: spool + "/.next"))
            let start = ContinuousClock.now
            rename(spool + "/.next", spool + "/next.key")
            answered.wait()
            guard let (status, at) = result.withLock({ $0 }), status == 200 else { throw BenchError("long poll did not answer 200") }
            latencies.append((at - start).seconds * 1000)
        }
        latencies.sort()
        print(String(
            format: "long poll answered after a spool rename, %d rounds: p50 %.2f ms  p99 %.2f ms  max %.2f ms",
            latencies.count, latencies[latencies.count / 2], latencies[min(latencies.count - 1, latencies.count * 99 / 100)],
            latencies.last ?? 0))
    }

    private func measure(socket: String, connections: Int, key: String) throws -> (Double, [Double]) {
        let perConnection = requests / connections
        let results = Mutex<[Double]>([])
        let failures = Mutex<[String]>([])
        let clients = try (0..<connections).map { _ in try KeepAliveClient(path: socket) }
        let group = DispatchGroup()
        let start = ContinuousClock.now
        for client in clients {
            group.enter()
            Thread.detachNewThread {
                var local: [Double] = []
                local.reserveCapacity(perConnection)
                do {
                    for _ in 0..<perConnection {
                        let begin = ContinuousClock.now
                        let answer = try client.get()
                        guard answer.status == 200, answer.body == key else { throw BenchError("answer \(answer.status)") }
                        local.append((ContinuousClock.now - begin).seconds * 1000)
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                results.withLock { $0.append(contentsOf: local) }
                group.leave()
            }
        }
        group.wait()
        let wall = (ContinuousClock.now - start).seconds
        if let failure = failures.withLock({ $0.first }) { throw BenchError(failure) }
        let latencies = results.withLock { $0 }.sorted()
        return (Double(latencies.count) / wall, latencies)
    }

    static func residentMiB(_ pid: Int32) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return kib / 1024
    }
}

/// The `recotap-keyd` binary next to this one, serving a fresh key from a scratch
/// directory, against the mock API; its stderr (console log, level `warning`) kept.
final class BenchDaemon: @unchecked Sendable {
    let key: String
    let mock: MockRecotapAPI
    let directory: String
    let process: Process
    private let errors = Pipe()
    private let output = Mutex(Data())
    var socket: String { directory + "/run/keyd.sock" }
    var log: String { output.withLock { String(decoding: $0, as: UTF8.self) } }

    private init(key: String, mock: MockRecotapAPI, directory: String, process: Process) {
        self.key = key
        self.mock = mock
        self.directory = directory
        self.process = process
    }

    static func start() async throws -> BenchDaemon {
        let key = "rtk_serving_bench_" + UUID().uuidString
        let mock = try await MockRecotapAPI.start()
        mock.setValidKeys([key])
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyd-bench-\(UUID().uuidString)").path
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("recotap-keyd").path
        let daemon = BenchDaemon(key: key, mock: mock, directory: directory, process: Process())
        let socket = daemon.socket
        daemon.process.executableURL = URL(fileURLWithPath: binary)
        daemon.process.arguments = [
            "--api-base-url", mock.baseURL, "--spool-directory", directory + "/spool",
            "--store-path", directory + "/state/keyd.sqlite3", "--sockets-api", socket,
            "--sockets-credential", directory + "/run/credential.sock", "--log-target", "console", "--log-level", "warning",
            "--check-interval", "1h", "--sockets-mode", "0666",
        ]
        daemon.process.environment = ["PATH": "/usr/bin:/bin"]
        daemon.process.standardError = daemon.errors
        daemon.errors.fileHandleForReading.readabilityHandler = { [daemon] handle in
            let data = handle.availableData
            daemon.output.withLock { $0.append(data) }
        }
        try daemon.process.run()
        while ListeningSockets.probe(path: socket) != 0 { try await Task.sleep(for: .milliseconds(20)) }
        chmod(directory, 0o755)
        chmod(directory + "/run", 0o755)
        try FileManager.default.createDirectory(atPath: directory + "/spool", withIntermediateDirectories: true)
        try Data(key.utf8).write(to: URL(fileURLWithPath: directory + "/spool/.k"))
        rename(directory + "/spool/.k", directory + "/spool/k")
        while true {
            let probe = try KeepAliveClient(path: socket)
            if try probe.get().status == 200 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        return daemon
    }

    /// SIGTERM, wait, and remove the scratch directory.
    func stop() {
        process.terminate()
        process.waitUntilExit()
        usleep(100_000)  // the last log lines
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A blocking HTTP/1.1 keep-alive client for one Unix socket connection (the
/// benchmark's load generator; the daemon under test is the measured part).
final class KeepAliveClient: @unchecked Sendable {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private static let request = Array("GET /v1/key HTTP/1.1\r\nHost: bench\r\n\r\n".utf8)

    init(path: String) throws {
        fd = try LoadClient.connect(path)
    }

    deinit { close(fd) }

    func get(path: String? = nil) throws -> (status: Int, body: String, version: Int) {
        let request = path.map { Array("GET \($0) HTTP/1.1\r\nHost: bench\r\n\r\n".utf8) } ?? Self.request
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        while true {
            if let end = headerEnd() {
                let head = String(decoding: buffer[0..<end], as: UTF8.self)
                let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
                func header(_ name: String) -> Int? {
                    head.split(separator: "\r\n").first { $0.lowercased().hasPrefix(name + ":") }
                        .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
                }
                let length = header("content-length") ?? 0
                if buffer.count >= end + 4 + length {
                    let body = String(decoding: buffer[(end + 4)..<(end + 4 + length)], as: UTF8.self)
                    buffer.removeFirst(end + 4 + length)
                    return (status, body, header("x-key-version") ?? 0)
                }
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = recv(fd, &chunk, chunk.count, 0)
            guard count > 0 else { throw BenchError("connection closed") }
            buffer += chunk[0..<count]
        }
    }

    private func headerEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for index in 0...(buffer.count - 4)
        where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            return index
        }
        return nil
    }
}
