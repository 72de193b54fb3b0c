import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import RecotapAPIMock
import RecotapKeyd

/// `make bench`: the figures of the README's "Performance" table, in one run.
///
/// The daemon is the release `recotap-keyd` next to this binary, started the way
/// systemd starts it (`NOTIFY_SOCKET`, `WATCHDOG_USEC=30000000` as the unit's
/// `WatchdogSec=30s`), serving a key the mock API accepts. The anchors, driven by the
/// same ``LoadClient``: nginx (one worker, `return 200` of the same bytes on a Unix
/// socket) where it is installed, and a plain SwiftNIO HTTP/1 server (this binary
/// again, `--nio-anchor`: the library's pipeline and a fixed answer, nothing else).
struct TableBench {
    var keepAliveRequests = 1_000_000
    var anchorRequests = 300_000
    var connectRequests = 100_000
    var idleSeconds = 20
    var startRuns = 10

    struct Row {
        var measure: String
        var keyd: String
        var anchor: String
    }

    func run() async throws {
        var rows: [Row] = []
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("keyd-table-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let key = "rtk_table_bench_" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
        let mock = try await MockRecotapAPI.start()
        mock.setValidKeys([key])

        // Start → READY=1, over `startRuns` starts on a store that holds the key.
        var starts: [Double] = []
        var daemon: Daemon?
        for run in 0..<startRuns {
            daemon?.stop()
            let started = try Daemon.start(directory: scratch, mock: mock.baseURL, seedKey: run == 0 ? key : nil)
            starts.append(started.readyAfter)
            daemon = started
        }
        guard let daemon else { throw BenchError("no daemon") }
        defer { daemon.stop() }
        try daemon.waitUntilServing(key: key)
        starts.sort()
        rows.append(Row(
            measure: "start → READY=1 (median of \(startRuns))", keyd: String(format: "%.1f ms", starts[starts.count / 2]),
            anchor: "—"))

        // Idle: RSS and wake-ups with no clients.
        try await Task.sleep(for: .seconds(2))
        let afterStart = Memory.of(daemon.pid)
        let wakeups = try await Self.wakeupsPerSecond(daemon.pid, seconds: idleSeconds)
        rows.append(Row(measure: "RSS idle after start, valid key", keyd: afterStart.description, anchor: "—"))
        rows.append(Row(
            measure: "idle wake-ups, all threads, \(idleSeconds) s", keyd: String(format: "%.2f per second", wakeups),
            anchor: "—"))

        // The anchors.
        let body = Array(key.utf8)
        let nginx = try Nginx.start(directory: scratch + "/nginx", body: key)
        defer { nginx?.stop() }
        let nio = try NIOAnchor.start(socket: scratch + "/nio.sock", body: key)
        defer { nio.terminate() }
        if let nginx { rows.append(Row(measure: "nginx worker RSS", keyd: "—", anchor: Memory.of(nginx.workerPID).description)) }

        // Keep-alive GET /v1/key, 64 connections.
        func keepAlive(_ socket: String, _ count: Int) throws -> LoadClient.Result {
            try LoadClient(socket: socket, mode: .keepAlive(path: "/v1/key"), connections: 64, requests: count, expectedBody: body).run()
        }
        let keyd = try keepAlive(daemon.apiSocket, keepAliveRequests)
        let plain = try keepAlive(nio.socket, anchorRequests)
        let nginxKeepAlive = try nginx.map { try keepAlive($0.socket, anchorRequests) }
        rows.append(Row(
            measure: "GET /v1/key keep-alive, 64 connections", keyd: keyd.summary,
            anchor: "plain NIO (2 loops): \(plain.summary)"))
        if let nginxKeepAlive {
            rows.append(Row(
                measure: "  ratio to nginx (\(nginxKeepAlive.summary))",
                keyd: String(format: "%.2f×", keyd.rate / nginxKeepAlive.rate),
                anchor: String(format: "plain NIO %.2f×", plain.rate / nginxKeepAlive.rate)))
        }
        rows.append(Row(measure: "RSS after \(keyd.requests) keep-alive requests", keyd: Memory.of(daemon.pid).description, anchor: "—"))

        // One connection per request, 16 clients.
        func perConnection(_ socket: String, http: Bool) throws -> LoadClient.Result {
            try LoadClient(
                socket: socket,
                mode: .connectPerRequest(request: http ? "GET /v1/key HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" : ""),
                connections: 16, requests: connectRequests, expectedBody: body
            ).run()
        }
        let credential = try perConnection(daemon.credentialSocket, http: false)
        let apiClose = try perConnection(daemon.apiSocket, http: true)
        let nginxClose = try nginx.map { try perConnection($0.socket, http: true) }
        rows.append(Row(
            measure: "credential.sock connect–read–close, 16 clients", keyd: credential.summary,
            anchor: nginxClose.map { "nginx Connection: close: \($0.summary)" } ?? "—"))
        if let nginxClose {
            rows.append(Row(
                measure: "  ratio to nginx", keyd: String(format: "%.2f×", credential.rate / nginxClose.rate), anchor: "—"))
        }
        rows.append(Row(
            measure: "keyd.sock GET /v1/key with Connection: close, 16 clients", keyd: apiClose.summary,
            anchor: nginxClose.map { String(format: "%.2f× nginx", apiClose.rate / $0.rate) } ?? "—"))
        rows.append(Row(
            measure: "RSS after \(keyd.requests + credential.requests + apiClose.requests) requests",
            keyd: Memory.of(daemon.pid).description, anchor: "—"))
        if nginx == nil { print("nginx is not installed (apt-get install nginx-light): no nginx anchor") }
        try await mock.shutdown()
        Self.printTable(rows)
    }

    static func printTable(_ rows: [Row]) {
        let widths = [
            max(7, rows.map(\.measure.count).max() ?? 0), max(12, rows.map(\.keyd.count).max() ?? 0),
            max(6, rows.map(\.anchor.count).max() ?? 0),
        ]
        func line(_ cells: [String]) -> String {
            "| " + zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: " | ") + " |"
        }
        print(line(["measure", "recotap-keyd", "anchor"]))
        print("|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|")
        for row in rows { print(line([row.measure, row.keyd, row.anchor])) }
    }

    /// Voluntary and involuntary context switches of every thread of `pid`, per second,
    /// over `seconds`: each is a thread that went to sleep or was woken. Sampled every
    /// second per thread, so a thread that ends (an idle pool thread retiring) loses at
    /// most its last second.
    static func wakeupsPerSecond(_ pid: Int32, seconds: Int) async throws -> Double {
        func switches() -> [String: Int] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            var counts: [String: Int] = [:]
            for task in tasks {
                guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
                counts[task] = status.split(separator: "\n").filter { $0.contains("ctxt_switches:") }
                    .compactMap { Int($0.split(separator: "\t").last?.trimmingCharacters(in: .whitespaces) ?? "") }.reduce(0, +)
            }
            return counts
        }
        var last = switches()
        var total = 0
        for _ in 0..<seconds {
            try await Task.sleep(for: .seconds(1))
            let now = switches()
            for (task, count) in now { total += count - (last[task] ?? 0) }
            last = now
        }
        return Double(total) / Double(seconds)
    }

    /// The daemon under test.
    final class Daemon: @unchecked Sendable {
        let process: Process
        let directory: String
        let readyAfter: Double
        var pid: Int32 { process.processIdentifier }
        var apiSocket: String { directory + "/run/keyd.sock" }
        var credentialSocket: String { directory + "/run/credential.sock" }

        private init(process: Process, directory: String, readyAfter: Double) {
            self.process = process
            self.directory = directory
            self.readyAfter = readyAfter
        }

        static func start(directory: String, mock: String, seedKey: String?) throws -> Daemon {
            let notify = directory + "/notify.sock"
            unlink(notify)
            let listener = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(listener) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(notify.utf8)) }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard bound == 0 else { throw BenchError("cannot bind \(notify)") }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

            let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
                .deletingLastPathComponent().appendingPathComponent("recotap-keyd").path
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = [
                "--api-base-url", mock, "--spool-directory", directory + "/spool",
                "--store-path", directory + "/state/keyd.sqlite3", "--sockets-api", directory + "/run/keyd.sock",
                "--sockets-credential", directory + "/run/credential.sock",
                "--sockets-generation-file", directory + "/run/generation", "--log-target", "console", "--log-level", "warning",
                "--check-interval", "1h", "--sockets-mode", "0666",
            ]
            process.environment = ["PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "30000000"]
            // Warnings (the default access groups do not exist here) go to a file, not the table.
            _ = FileManager.default.createFile(atPath: directory + "/daemon.log", contents: nil)
            process.standardError = FileHandle(forWritingAtPath: directory + "/daemon.log")
            let start = ContinuousClock.now
            try process.run()
            var message = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(listener, &message, message.count, 0)
                guard count > 0 else {
                    process.terminate()
                    throw BenchError("no READY=1 from the daemon within 10 s")
                }
                if String(decoding: message[0..<count], as: UTF8.self).split(separator: "\n").contains("READY=1") { break }
            }
            let daemon = Daemon(process: process, directory: directory, readyAfter: (ContinuousClock.now - start).seconds * 1000)
            if let seedKey {
                let hidden = directory + "/spool/.k"
                try Data(seedKey.utf8).write(to: URL(fileURLWithPath: hidden))
                rename(hidden, directory + "/spool/k")
                try daemon.waitUntilServing(key: seedKey)
            }
            return daemon
        }

        func waitUntilServing(key: String) throws {
            for _ in 0..<500 {
                if let answer = try? LoadClient(
                    socket: apiSocket, mode: .keepAlive(path: "/v1/key"), connections: 1, requests: 1, expectedBody: Array(key.utf8)
                ).run(), answer.requests == 1 {
                    return
                }
                usleep(20_000)
            }
            throw BenchError("the daemon does not serve the key")
        }

        func stop() {
            guard process.isRunning else { return }
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// nginx, one worker, answering every request with `body` on a Unix socket.
    struct Nginx {
        let process: Process
        let socket: String
        let directory: String

        var workerPID: Int32 {
            let children = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/task/\(process.processIdentifier)/children", encoding: .utf8)) ?? ""
            return children.split(separator: " ").first.flatMap { Int32($0) } ?? process.processIdentifier
        }

        static func start(directory: String, body: String) throws -> Nginx? {
            let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }
            guard let binary else { return nil }
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let socket = directory + "/nginx.sock"
            let configuration = """
                worker_processes 1;
                daemon off;
                master_process on;
                pid \(directory)/nginx.pid;
                error_log \(directory)/error.log;
                events { worker_connections 4096; }
                http {
                    access_log off;
                    keepalive_requests 100000000;
                    keepalive_timeout 300s;
                    client_body_temp_path \(directory);
                    server {
                        listen unix:\(socket);
                        location / { default_type text/plain; return 200 "\(body)"; }
                    }
                }
                """
            try configuration.write(toFile: directory + "/nginx.conf", atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["-e", directory + "/error.log", "-p", directory, "-c", directory + "/nginx.conf"]
            try process.run()
            for _ in 0..<250 where ListeningSockets.probe(path: socket) != 0 { usleep(20_000) }
            guard ListeningSockets.probe(path: socket) == 0 else { throw BenchError("nginx did not start: see \(directory)/error.log") }
            chmod(socket, 0o666)
            return Nginx(process: process, socket: socket, directory: directory)
        }

        func stop() {
            kill(process.processIdentifier, SIGQUIT)
            process.waitUntilExit()
        }
    }
}

extension LoadClient.Result {
    var summary: String {
        String(format: "%.0f req/s, p50 %.2f ms, p99 %.2f ms", rate, percentile(0.5), percentile(0.99))
    }
}

/// Resident memory of a process, from `/proc/PID/status`.
struct Memory: CustomStringConvertible {
    var rss = 0.0
    var anonymous = 0.0
    var file = 0.0

    static func of(_ pid: Int32) -> Memory {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return Memory() }
        func mebibytes(_ field: String) -> Double {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
                let kib = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
            else { return 0 }
            return kib / 1024
        }
        return Memory(rss: mebibytes("VmRSS"), anonymous: mebibytes("RssAnon"), file: mebibytes("RssFile"))
    }

    var description: String { String(format: "%.1f MiB (anon %.1f, file %.1f)", rss, anonymous, file) }
}

/// A plain SwiftNIO HTTP/1 server on a Unix socket — the library's own server pipeline
/// and a fixed answer, nothing else: what "the ceiling of the library" means in the
/// table. Run as a child process (this binary with `--nio-anchor`).
enum NIOAnchor {
    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let body: String
        init(body: String) { self.body = body }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/plain")
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    /// Serves until killed.
    static func serve(socket: String, body: String, loops: Int) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(body: body))
                }
            }
            .bind(unixDomainSocketPath: socket, cleanupExistingSocketFile: true).get()
        chmod(socket, 0o666)
        try await channel.closeFuture.get()
    }

    struct Running {
        let process: Process
        let socket: String
        func terminate() {
            process.terminate()
            process.waitUntilExit()
        }
    }

    static func start(socket: String, body: String) throws -> Running {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        process.arguments = ["--nio-anchor", socket, "--nio-anchor-body", body]
        try process.run()
        for _ in 0..<250 where ListeningSockets.probe(path: socket) != 0 { usleep(20_000) }
        return Running(process: process, socket: socket)
    }
}

