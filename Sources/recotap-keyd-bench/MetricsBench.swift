import Foundation
import RecotapKeyd

/// What a scrape costs the daemon (README "Monitoring"): rendering the exposition —
/// the present read from a published key, every family emitted, the process metrics
/// read from /proc/self — and its size; and one counted event on the serving path.
struct MetricsBench {
    let renders: Int

    func run() async throws {
        let metrics = KeydMetrics()
        let key = APIKey(secret: "rtk_benchmark_key_" + UUID().uuidString)
        let now = Date()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyd-metrics-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try KeyStore(path: directory + "/keyd.sqlite3")
        let record = try await store.addAndActivate(key, source: "new.key", state: .valid, at: now).activated
        await store.close()
        metrics.checked(CheckResult(outcome: .valid, httpStatus: 200, latency: .milliseconds(40)), keyID: record.id, at: now)
        var size = 0
        for process in [true, false] {
            for _ in 0..<50 { size = metrics.render(current: record, longPolls: 3, connections: 10, process: process).count }
            let start = ContinuousClock.now
            for _ in 0..<renders { size = metrics.render(current: record, longPolls: 3, connections: 10, process: process).count }
            let each = (ContinuousClock.now - start).seconds / Double(renders) * 1e6
            print(String(format: "metrics render (%@), %d renders: %.1f µs each, %d bytes", process ? "/metrics" : "textfile", renders, each, size))
        }
        let events = 10_000_000
        let start = ContinuousClock.now
        for _ in 0..<events { metrics.served(on: .keyd) }
        let each = (ContinuousClock.now - start).seconds / Double(events) * 1e9
        print(String(format: "one served-key count: %.1f ns", each))
    }
}
