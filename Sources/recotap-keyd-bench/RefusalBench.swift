import Foundation
import RecotapKeyd
import Synchronization

/// Refusals under load: `workers` processes as `nobody` (this binary again, through
/// `setpriv`) connect to keyd.sock as fast as they can and ask for the key, while one
/// reader (root, an admin) fetches it over a keep-alive connection. Reports the
/// refusals per second the daemon absorbed, what the reader got meanwhile, and how
/// many log lines the refusals cost (per 10,000).
struct RefusalBench {
    let seconds: Int
    let workers: Int

    func run() async throws {
        let bench = try await BenchDaemon.start()
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var floods: [(Process, Pipe)] = []
        for _ in 0..<workers {
            let process = Process()
            let output = Pipe()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = [
                "--reuid=65534", "--regid=65534", "--clear-groups", me, "--flood-socket", bench.socket,
                "--flood-seconds", String(seconds), "--checks", "0", "--activations", "0", "--requests", "0",
            ]
            process.standardOutput = output
            try process.run()
            floods.append((process, output))
        }
        // The reader, for as long as the flood lasts.
        let reader = try KeepAliveClient(path: bench.socket)
        var latencies: [Double] = []
        let end = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < end {
            let begin = ContinuousClock.now
            let answer = try reader.get()
            guard answer.status == 200, answer.body == bench.key else { throw BenchError("the reader got \(answer.status)") }
            latencies.append((ContinuousClock.now - begin).seconds * 1000)
        }
        var refusals = 0
        for (process, output) in floods {
            process.waitUntilExit()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            refusals += Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        bench.stop()  // the summaries are written at shutdown at the latest
        let log = bench.log.split(separator: "\n")
        let full = log.filter { $0.contains("refused uid 65534") }.count
        let summaries = log.filter { $0.contains("event=ACCESS_DENIED_SUPPRESSED") }.count
        latencies.sort()
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        print(String(
            format: "refusals: %d in %d s by %d processes as nobody: %.0f/s absorbed", refusals, seconds, workers,
            Double(refusals) / Double(seconds)))
        print(String(
            format: "reader meanwhile: %d GET /v1/key, %.0f req/s, latency ms p50 %.3f  p99 %.3f  max %.3f",
            latencies.count, Double(latencies.count) / Double(seconds), percentile(0.5), percentile(0.99), latencies.last ?? 0))
        print(String(
            format: "log lines for them: %d ACCESS_DENIED + %d summaries = %.2f per 10,000 refusals", full, summaries,
            Double(full + summaries) * 10_000 / Double(max(refusals, 1))))
    }

    /// The load of one flood process: threads that connect, ask, read the refusal and
    /// start again, for `seconds`. Prints how many answers it read.
    static func flood(socket: String, seconds: Int, threads: Int = 4) {
        let count = Mutex(0)
        let group = DispatchGroup()
        let end = ContinuousClock.now + .seconds(seconds)
        for _ in 0..<threads {
            group.enter()
            Thread.detachNewThread {
                var mine = 0
                while ContinuousClock.now < end {
                    guard let client = try? KeepAliveClient(path: socket) else { continue }
                    if let answer = try? client.get(), answer.status == 403 { mine += 1 }
                }
                count.withLock { $0 += mine }
                group.leave()
            }
        }
        group.wait()
        print(count.withLock { $0 })
    }
}
