import Foundation
import RecotapKeydFuzzTargets
import Testing

/// Every committed seed and every reproducer of a bug the fuzzers found, replayed
/// through its target on each test run: a regression fails here without libFuzzer.
@Suite("Fuzz corpora replayed")
struct FuzzCorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz").path

    static func files(_ kind: String, _ target: String) -> [String] {
        let directory = "\(root)/\(kind)/\(target)"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().map { "\(directory)/\($0)" }
    }

    @Test("each target's seeds and reproducers pass its invariants", arguments: FuzzTarget.all.map(\.name))
    func replay(_ name: String) async throws {
        let target = try #require(FuzzTarget.named(name))
        let seeds = Self.files("Corpus", name)
        #expect(!seeds.isEmpty, "Fuzz/Corpus/\(name) has seeds")
        for path in seeds + Self.files("Reproducers", name) {
            let bytes = try #require(FileManager.default.contents(atPath: path))
            // The serving targets block on async work: keep them off the test pool.
            let failure = try await offload { () -> String? in
                do throws(FuzzFailure) {
                    try target.run(Array(bytes))
                    return nil
                } catch {
                    return error.message
                }
            }
            #expect(failure == nil, "\(path): \(failure ?? "")")
        }
    }
}
