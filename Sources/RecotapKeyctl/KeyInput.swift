import Foundation
import RecotapKeyd
#if canImport(Glibc)
import Glibc
#endif

/// Reads the key for `rotate` and checks it with the spool's own content rules, so a
/// typo is caught before anything is written.
enum KeyInput {
    static func read(_ source: String) throws(KeyctlError) -> APIKey {
        let bytes: [UInt8]
        if source == "-" {
            bytes = isatty(STDIN_FILENO) == 1 ? promptWithoutEcho() : Array(FileHandle.standardInput.readDataToEndOfFile().prefix(8192))
        } else {
            guard let data = FileManager.default.contents(atPath: source) else {
                throw KeyctlError(exit: .failure, message: "cannot read \(source)")
            }
            bytes = Array(data.prefix(8192))
        }
        switch KeyFileContent.parse(bytes) {
        case .key(let secret): return APIKey(secret: secret)
        case .empty: throw KeyctlError(exit: .failure, message: "no key given (the input is empty)")
        case .malformed(let why): throw KeyctlError(exit: .failure, message: "that is not a key: \(why)")
        }
    }

    /// Prompts on stderr and reads one line from the terminal with echo off.
    private static func promptWithoutEcho() -> [UInt8] {
        FileHandle.standardError.write(Data("Recotap API key (not echoed): ".utf8))
        var saved = termios()
        let hasTerminal = tcgetattr(STDIN_FILENO, &saved) == 0
        if hasTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
        }
        defer {
            if hasTerminal { tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved) }
            FileHandle.standardError.write(Data("\n".utf8))
        }
        return Array((readLine(strippingNewline: true) ?? "").utf8)
    }
}
