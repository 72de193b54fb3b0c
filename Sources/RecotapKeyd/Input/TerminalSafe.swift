/// Text from outside — a spool file's name, the API's reason phrase or `Location`
/// header, a peer's `comm`, a request path — made safe to print where a person reads
/// it: a terminal, `journalctl`, a log file. Unescaped, such text can move the cursor,
/// rewrite a line already shown, change the window title, or forge a log line after a
/// newline; a bidirectional override can make a name read backwards.
public enum TerminalSafe {
    /// `text` with every control character written as an escape: `\n`, `\r`, `\t`,
    /// `\x1b` for the other C0 controls and DEL, `\u{9b}` for C1 controls, Unicode
    /// line separators, the bidirectional controls and invisible characters
    /// (zero-width spaces and joiners, the BOM, tag characters); a backslash itself as `\\`, so
    /// that an escape in the output always means the character was there. Printable
    /// text, including non-ASCII letters, is unchanged.
    public static func escape(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            guard needsEscape(scalar) else {
                out.unicodeScalars.append(scalar)
                continue
            }
            out += escaped(scalar)
        }
        return out
    }

    /// Whether `scalar` is written escaped by ``escape(_:)``.
    public static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: true  // C0, DEL, C1
        case 0x5C: true  // backslash: keeps escapes unambiguous
        case 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true  // bidirectional controls
        case 0x2028, 0x2029: true  // line and paragraph separators
        case 0x200B...0x200D, 0x2060...0x2064, 0xFEFF, 0xE0000...0xE007F: true  // invisible: zero-width, BOM, tags
        default: false
        }
    }

    /// Whether `scalar` is a control character: everything ``escape(_:)`` rewrites
    /// except the backslash.
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value != 0x5C && needsEscape(scalar)
    }

    private static func escaped(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        case "\\": return "\\\\"
        default:
            let hex = String(scalar.value, radix: 16)
            if scalar.value < 0x80 { return "\\x" + (hex.count < 2 ? "0" : "") + hex }
            return "\\u{" + hex + "}"
        }
    }
}
