import Foundation

/// An invariant a fuzz input broke: the runner turns it into a crash (which libFuzzer
/// saves as a reproducer); the replay tests record it as a failure.
public struct FuzzFailure: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One fuzz target: a name (the folder of its corpus under `Fuzz/Corpus/`) and a
/// function that feeds one input to the daemon's real code and checks what came out.
/// A trap inside is a bug the fuzzer reports itself; a broken invariant throws.
public struct FuzzTarget: Sendable {
    public let name: String
    public let summary: String
    public let run: @Sendable ([UInt8]) throws(FuzzFailure) -> Void

    /// Every target, by name.
    public static let all: [FuzzTarget] = [
        .httpPipeline, .routes, .spoolContent, .spoolNames, .configuration, .classifier,
    ]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// `check(condition, "what broke")` for the targets' invariants.
func check(_ condition: Bool, _ message: @autoclosure () -> String) throws(FuzzFailure) {
    if !condition { throw FuzzFailure(message()) }
}

/// Runs async work to its end from the fuzzer's synchronous entry point.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let result = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        result.value = await body()
        done.signal()
    }
    done.wait()
    return result.value!
}

private final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

/// Splits `bytes` at each `separator` (at most `limit` parts; the last takes the rest).
func fields(_ bytes: [UInt8], separator: UInt8 = 0, limit: Int) -> [[UInt8]] {
    bytes.split(separator: separator, maxSplits: limit - 1, omittingEmptySubsequences: false).map(Array.init)
}
