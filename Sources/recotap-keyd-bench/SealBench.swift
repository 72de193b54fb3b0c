import Foundation
import RecotapKeyd

/// What sealing the store costs per check (README "Sealing the store"): the store's
/// side of a check — the check recorded in one transaction, then the active key read
/// back and published (its secret opened when sealed) — with and without a store key,
/// on real SQLite files; and AES-GCM open alone.
struct SealBench {
    let checks: Int

    func run() async throws {
        let key = APIKey(secret: "rtk_benchmark_key_" + UUID().uuidString)
        let seal = SecretSeal(credential: (0..<32).map { _ in UInt8.random(in: 0...255) })
        var perCheck: [String: Double] = [:]
        // Alternated, twice each, so the page cache and the disk warm up for both alike.
        for round in 0..<4 {
            let sealed = round % 2 == 1
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keyd-seal-bench-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = try KeyStore(path: directory + "/keyd.sqlite3", seal: sealed ? seal : nil)
            let id = try await store.addAndActivate(key, source: "bench", state: .valid, at: Date()).activated.id
            for _ in 0..<50 { try await record(store, id) }
            let start = ContinuousClock.now
            for _ in 0..<checks { try await record(store, id) }
            let elapsed = (ContinuousClock.now - start).seconds
            guard store.current.record?.key == key else { throw BenchError("the published key is not the key") }
            await store.close()
            if round >= 2 { perCheck[sealed ? "sealed" : "clear"] = elapsed / Double(checks) * 1e6 }
        }
        let clear = perCheck["clear"] ?? 0
        let sealedCost = perCheck["sealed"] ?? 0
        print(String(format: "store side of a check (%d checks, commit + read back + publish): in the clear %.1f µs, sealed %.1f µs (%+.1f µs, %+.1f%%)",
            checks, clear, sealedCost, sealedCost - clear, clear > 0 ? (sealedCost - clear) / clear * 100 : 0))

        let stored = try seal.seal(key.revealSecret(), id: 1, fingerprint: key.fingerprint)
        let opens = 100_000
        let start = ContinuousClock.now
        for _ in 0..<opens {
            guard case .success(key.revealSecret()) = SecretSeal.open(stored, id: 1, fingerprint: key.fingerprint, seal: seal) else {
                throw BenchError("the sealed secret did not open")
            }
        }
        print(String(format: "AES-GCM open of one secret (with the fingerprint check): %.2f µs", (ContinuousClock.now - start).seconds / Double(opens) * 1e6))
    }

    private func record(_ store: KeyStore, _ id: Int64) async throws {
        try await store.record(check: CheckRecord(
            keyID: id, at: Date(), outcome: .valid, httpStatus: 200, latencyMilliseconds: 5, reason: nil))
    }
}
