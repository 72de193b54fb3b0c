/// The content rules for a key file (README, "Dropping in a new key"): surrounding whitespace, a trailing
/// newline, CRLF and a UTF-8 BOM are stripped; what remains must be printable ASCII
/// without spaces, 8–512 bytes.
public enum KeyFileContent {
    public static let minimumLength = 8
    public static let maximumLength = 512

    public enum Verdict: Equatable, Sendable {
        case key(String)
        case empty
        /// Why, in plain words.
        case malformed(String)
    }

    public static func parse(_ bytes: [UInt8]) -> Verdict {
        var content = bytes[...]
        if content.starts(with: [0xEF, 0xBB, 0xBF]) { content = content.dropFirst(3) }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D || $0 == 0x0B || $0 == 0x0C }
        while let first = content.first, isSpace(first) { content = content.dropFirst() }
        while let last = content.last, isSpace(last) { content = content.dropLast() }
        if content.isEmpty { return .empty }
        for (offset, byte) in content.enumerated() {
            if byte == 0x0A || byte == 0x0D {
                return .malformed("more than one line (a key file holds exactly one key)")
            }
            if isSpace(byte) {
                return .malformed("whitespace inside the key at position \(offset + 1)")
            }
            if byte < 0x21 || byte > 0x7E {
                let hex = String(byte, radix: 16, uppercase: true)
                return .malformed("byte 0x\(byte < 16 ? "0" : "")\(hex) at position \(offset + 1) is not printable ASCII")
            }
        }
        guard content.count >= minimumLength else {
            return .malformed("\(content.count) characters long; a key has \(minimumLength) to \(maximumLength)")
        }
        guard content.count <= maximumLength else {
            return .malformed("\(content.count) characters long; a key has \(minimumLength) to \(maximumLength)")
        }
        return .key(String(decoding: content, as: UTF8.self))
    }
}
