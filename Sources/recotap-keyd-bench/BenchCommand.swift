import ArgumentParser
import Foundation
import RecotapAPIMock
import RecotapKeyd

/// What one key check costs: the real API client against the bundled mock on
/// loopback, sequential checks over one pooled connection. A benchmark to run by hand
/// (`swift run -c release recotap-keyd-bench`), not a test.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recotap-keyd-bench",
        abstract: "Measures the latency and CPU cost of one key check against the mock API on loopback.")

    @Option(help: "Checks to measure (after 50 for warm-up).")
    var checks = 2000

    func run() async throws {
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

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
