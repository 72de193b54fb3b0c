import ArgumentParser
import Foundation
import Logging
import RecotapAPIMock
import NIOCore
import RecotapKeyd

/// What one key check costs: the real API client against the bundled mock on
/// loopback, sequential checks over one pooled connection. A benchmark to run by hand
/// (`swift run -c release recotap-keyd-bench`), not a test.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recotap-keyd-bench",
        abstract: "Measures a key check against the mock API, a spool activation, and GET /v1/key on keyd.sock.",
        version: KeydVersion.full)

    @Option(help: "Checks to measure (after 50 for warm-up).")
    var checks = 2000

    @Option(help: "Spool activations to measure (0 skips): rename of a key file into the spool until the file is gone (read, verified with the API, committed durably, removed).")
    var activations = 200

    @Option(help: "GET /v1/key requests per connection count (0 skips the serving benchmark).")
    var requests = 100_000

    @Option(help: "Keep-alive connection counts to measure GET /v1/key with, comma-separated.")
    var connections = "1,64"

    @Option(help: "Checks to measure the store's side of, in the clear and sealed (0 skips): what sealing costs per check.")
    var sealChecks = 2000

    @Option(help: "Metrics renders to measure (0 skips): what a scrape costs the daemon, and its size.")
    var metricsRenders = 2000

    @Option(help: "Seconds of refusals to measure (0 skips): processes as nobody ask for the key while a reader fetches it (needs root and setpriv).")
    var refusals = 0

    @Option(help: "Processes flooding with refusals.")
    var refusalWorkers = 4

    @Flag(help: "Print the README's performance table (what `make bench` runs): start → READY, idle RSS and wake-ups, keep-alive and connect-per-request throughput against nginx and a plain SwiftNIO server, RSS after them. Other measurements are skipped.")
    var table = false

    @Option(help: "Keep-alive requests to recotap-keyd for --table.")
    var tableRequests = 1_000_000

    @Option(help: "Seconds to count idle wake-ups over for --table.")
    var idleSeconds = 20

    @Option(help: "Drive a running server instead (for profiling it: `valgrind --tool=callgrind recotap-keyd …`): GET /v1/key on this Unix socket, --drive-requests times over --drive-connections keep-alive connections, every answer checked against --drive-body.")
    var drive: String?
    @Option(help: "Requests for --drive.") var driveRequests = 20_000
    @Option(help: "Connections for --drive.") var driveConnections = 4
    @Option(help: "The body every --drive answer must have (the key served).") var driveBody = ""
    @Flag(help: "--drive with one connection per request (an empty request: credential.sock).") var driveRaw = false

    @Option(help: .hidden) var nioAnchor: String?
    @Option(help: .hidden) var nioAnchorBody = ""
    @Option(help: .hidden) var floodSocket: String?
    @Option(help: .hidden) var floodSeconds = 10

    func run() async throws {
        if let nioAnchor {
            try await NIOAnchor.serve(socket: nioAnchor, body: nioAnchorBody, loops: System.coreCount)
            return
        }
        if let drive {
            let result = try LoadClient(
                socket: drive, mode: driveRaw ? .connectPerRequest(request: "") : .keepAlive(path: "/v1/key"),
                connections: driveConnections, requests: driveRequests, expectedBody: Array(driveBody.utf8)
            ).run()
            print("\(result.requests) requests: \(result.summary)")
            return
        }
        if table {
            try await TableBench(keepAliveRequests: tableRequests, idleSeconds: idleSeconds).run()
            return
        }
        if let floodSocket {
            RefusalBench.flood(socket: floodSocket, seconds: floodSeconds)
            return
        }
        if refusals > 0 { try await RefusalBench(seconds: refusals, workers: refusalWorkers).run() }
        if checks > 0 { try await measureChecks() }
        if activations > 0 { try await measureActivations() }
        if sealChecks > 0 { try await SealBench(checks: sealChecks).run() }
        if metricsRenders > 0 { try await MetricsBench(renders: metricsRenders).run() }
        if requests > 0 {
            try await ServingBench(requests: requests, connections: connections.split(separator: ",").compactMap { Int($0) }).run()
        }
    }

    func measureChecks() async throws {
        let key = APIKey(secret: "rtk_benchmark_key_" + UUID().uuidString)
        let mock = try await MockRecotapAPI.start()
        mock.setValidKeys([key.revealSecret()])
        var api = KeydConfiguration.defaults.api
        api.baseURL = mock.baseURL
        let client = try RecotapAPIClient(api: api, retryAfterCap: .seconds(300), environment: [:])

        for _ in 0..<50 { _ = await client.check(key) }
        var latencies: [Double] = []
        latencies.reserveCapacity(checks)
        let cpuBefore = Self.cpuSeconds()
        let wallStart = ContinuousClock.now
        for _ in 0..<checks {
            let result = await client.check(key)
            guard result.outcome == .valid else { throw ValidationError("unexpected outcome \(result.outcome)") }
            latencies.append(Double(result.latency.components.attoseconds) / 1e15 + Double(result.latency.components.seconds) * 1000)
        }
        let wall = ContinuousClock.now - wallStart
        let cpu = Self.cpuSeconds() - cpuBefore
        await client.shutdown()
        try await mock.shutdown()

        latencies.sort()
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        let mean = latencies.reduce(0, +) / Double(latencies.count)
        print(String(format: "checks: %d over %.2f s wall, one connection (mock opened %d)", checks, wall.seconds, mock.connectionCount))
        print(String(format: "latency ms: mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f", mean, percentile(0.5), percentile(0.9), percentile(0.99), latencies.last ?? 0))
        print(String(format: "process CPU per check (client + in-process mock): %.1f µs", cpu / Double(checks) * 1e6))
    }

    /// The daemon as the executable builds it (real inotify, real SQLite with
    /// synchronous=FULL, real API client) in a temporary directory, against the mock.
    func measureActivations() async throws {
        let mock = try await MockRecotapAPI.start()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyd-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = KeydConfiguration.defaults
        configuration.api.baseURL = mock.baseURL
        configuration.spool.directory = directory + "/spool"
        configuration.store.path = directory + "/state/keyd.sqlite3"
        configuration.check.interval = .seconds(3600)
        configuration.sockets.api = directory + "/run/keyd.sock"
        configuration.sockets.credential = directory + "/run/credential.sock"
        configuration.sockets.generationFile = directory + "/run/generation"
        let daemon = try await KeydDaemon.build(
            configuration: configuration, logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() },
            notifier: SystemdNotifier { _ in true }, watchdogInterval: nil)
        let running = Task { try await daemon.run() }
        try await Task.sleep(for: .milliseconds(300))

        var latencies: [Double] = []
        for index in 0..<(activations + 10) {
            let key = "rtk_bench_activation_\(index)_\(UUID().uuidString)"
            mock.addValidKey(key)
            let hidden = configuration.spool.directory + "/.next.key"
            let target = configuration.spool.directory + "/next.key"
            try Data(key.utf8).write(to: URL(fileURLWithPath: hidden))
            chmod(hidden, 0o640)
            let start = ContinuousClock.now
            rename(hidden, target)
            while access(target, F_OK) == 0 { usleep(50) }
            let elapsed = ContinuousClock.now - start
            if index >= 10 { latencies.append(elapsed.seconds * 1000) }
        }
        await daemon.serviceGroup.triggerGracefulShutdown()
        try await running.value
        try await mock.shutdown()
        latencies.sort()
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        print(String(format: "spool activation (rename → file gone), %d keys: mean %.2f ms  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f",
            latencies.count, latencies.reduce(0, +) / Double(latencies.count), percentile(0.5), percentile(0.9), percentile(0.99), latencies.last ?? 0))
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
