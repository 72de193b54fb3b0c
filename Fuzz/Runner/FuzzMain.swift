import Foundation
import RecotapKeydFuzzTargets

// Built for libFuzzer (`make fuzz`, with -DRECOTAP_FUZZ and -sanitize=fuzzer,address),
// main hands libFuzzer's driver the target chosen by RECOTAP_FUZZ_TARGET. Built normally, the same binary replays files through a
// target: `recotap-keyd-fuzz TARGET FILE…` (exit 1 on a broken invariant).

#if RECOTAP_FUZZ
nonisolated(unsafe) private var selected: FuzzTarget?

/// libFuzzer's driver, called from this program's own main (SwiftPM links an
/// executable's entry point under its own name, so libFuzzer's main is not used).
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// The one input function; exported under libFuzzer's name as well, which its own
/// (unused) main refers to.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        try selected!.run(bytes)
    } catch {
        fatalError("\(selected!.name): \(error)")
    }
    return 0
}

@main
struct FuzzDriver {
    static func main() {
        let name = ProcessInfo.processInfo.environment["RECOTAP_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget.named(name) else {
            let names = FuzzTarget.all.map(\.name).joined(separator: ", ")
            FileHandle.standardError.write(Data("set RECOTAP_FUZZ_TARGET to one of: \(names)\n".utf8))
            exit(64)
        }
        selected = target
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(runDriver(&argc, &argv, fuzzOne))
    }
}
#else
@main
struct FuzzReplay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget.named(name) else {
            let names = FuzzTarget.all.map { "  \($0.name): \($0.summary)" }.joined(separator: "\n")
            print("usage: recotap-keyd-fuzz TARGET FILE…\ntargets:\n\(names)")
            exit(64)
        }
        var failed = 0
        for path in arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("cannot read \(path)")
                failed += 1
                continue
            }
            do {
                try target.run(Array(data))
            } catch {
                print("\(path): \(error)")
                failed += 1
            }
        }
        print("\(arguments.count - 1 - failed) passed, \(failed) failed")
        exit(failed == 0 ? 0 : 1)
    }
}
#endif
