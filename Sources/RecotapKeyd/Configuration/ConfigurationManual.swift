/// `recotap-keyd.yaml(5)`, written from the one table of keys the loader uses
/// (``ConfigurationKey/all``): every key with its default, what it accepts, its
/// environment variable and its flag — so the manual cannot drift from the loader.
/// `recotap-keyd --config-manual` prints it; `make install` installs it.
public enum ConfigurationManual {
    /// When this page's text last changed (the keys' entries come from the table).
    static let date = "2026-11-30"

    public static func roff() -> String {
        var lines: [String] = [
            ".TH RECOTAP-KEYD.YAML 5 \(date) \"recotap-keyd \(KeydVersion.current)\" \"File Formats Manual\"",
            ".SH NAME",
            "recotap-keyd.yaml \\- configuration of recotap-keyd",
            ".SH SYNOPSIS",
            ".B \(escape(KeydConfiguration.defaultPath))",
            ".SH DESCRIPTION",
        ]
        lines += wrap("One YAML file (\(escape(KeydConfiguration.defaultPath)) by default, or the file given with")
        lines += [".BR \\-\\-config ),"]
        lines += wrap(
            "then environment variables, then flags: flags win over the environment, which wins over the file, "
                + "which wins over the defaults. Every key is optional. Keys are written nested in the file "
                + "(the key check.interval is interval: under check:). A key that is not listed here stops the start, "
                + "in the file, in the environment (any")
        lines += [".B RECOTAP_KEYD_"]
        lines += wrap("variable) and on the command line; every refusal names the key and where its value came from.")
        lines += [".PP"]
        lines += wrap(
            "Durations are a number and a unit: 500ms, 30s, 5m, 1h, 1d, or combined (1h30m); a bare number is refused. "
                + "Lists are YAML lists in the file and comma\\-separated in the environment or a flag. "
                + "Relative paths are allowed in the file only, and are relative to the file's directory. "
                + "A refused configuration exits with status 78 (EX_CONFIG).")
        lines += [
            ".SH KEYS",
        ]
        for key in ConfigurationKey.all {
            let shown = key.show(KeydConfiguration.defaults)
            lines += [
                ".TP",
                ".B \(escape(key.name))",
            ]
            lines += wrap("Default: \(shown.isEmpty ? "\"\" (none)" : escape(shown)).")
            lines += wrap("Accepts \(escape(accepts(key))).")
            lines += [
                ".br",
                "Environment:",
                ".BR \(escape(key.environmentVariable)) ;",
                "flag:",
                ".BR \(escape(key.flag)) .",
            ]
        }
        lines += [
            ".SH FILES",
            ".TP",
            ".I \(escape(KeydConfiguration.defaultPath))",
            "The configuration file, installed once and never overwritten.",
            ".SH EXAMPLES",
            ".nf",
            "check:",
            "  interval: 5m",
            "access:",
            "  readers: { users: [], groups: [recotap\\-key] }",
            "metrics:",
            "  listen: 127.0.0.1:9851",
            ".fi",
            ".SH SEE ALSO",
            ".BR recotap-keyd (8),",
            ".BR recotap-keyctl (1)",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Words joined into lines of at most 78 bytes (one word longer than that stays
    /// whole), none starting with a control character.
    static func wrap(_ text: String) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty, line.utf8.count + 1 + word.utf8.count > 78 {
                lines.append(line)
                line = ""
            }
            line += line.isEmpty ? (word.hasPrefix(".") || word.hasPrefix("'") ? "\\&" + word : String(word)) : " " + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    private static func accepts(_ key: ConfigurationKey) -> String {
        let kind = switch key.kind {
        case .string: "a string"
        case .path: "a path"
        case .bool: "true or false"
        case .double: "a number"
        case .duration: "a duration"
        case .stringArray: "a list"
        }
        guard let range = key.range else { return kind }
        return "\(kind): \(range)"
    }

    /// Text safe in a roff line: backslashes and hyphens escaped, no line starting
    /// with a control character.
    static func escape(_ text: String) -> String {
        var escaped = text.replacingOccurrences(of: "\\", with: "\\e").replacingOccurrences(of: "-", with: "\\-")
        if escaped.hasPrefix(".") || escaped.hasPrefix("'") { escaped = "\\&" + escaped }
        return escaped
    }
}
