import Foundation
import Logging

/// The table of ``ConfigurationKey/all`` applied to the values the sources gave, in
/// order, then the checks that relate two keys. Every refusal names the key, where its
/// value came from and, for ranges, the allowed range.
struct ConfigurationValidator {
    let settings: [String: ConfigurationSetting]

    func build() throws(ConfigurationError) -> KeydConfiguration {
        var config = KeydConfiguration.defaults
        for key in ConfigurationKey.all {
            if let setting = settings[key.name] { try key.apply(setting, &config) }
        }
        if config.check.backoffMax < config.check.backoffMin {
            throw error(
                "check.backoff_max",
                "must not be shorter than check.backoff_min (\(DurationParsing.format(config.check.backoffMin)))")
        }
        if config.sockets.api == config.sockets.credential {
            throw error("sockets.credential", "must differ from sockets.api")
        }
        try refuseInsecureHTTP(config.api)
        if let listen = config.metrics.listen, !listen.isLoopback, !config.metrics.allowRemote {
            throw error(
                "metrics.listen",
                "\(listen) is not a loopback address: the metrics would be open to the network; listen on 127.0.0.1 or [::1], or set metrics.allow_remote")
        }
        return config
    }

    private func error(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(key: key, source: settings[key]?.origin.description, message: message)
    }

    private func refuseInsecureHTTP(_ api: KeydConfiguration.API) throws(ConfigurationError) {
        guard let url = URLComponents(string: api.baseURL), url.scheme?.lowercased() == "http" else { return }
        if api.allowInsecureHTTP || Self.isLoopback(url.host ?? "") { return }
        throw error(
            "api.base_url",
            "plain http:// to a non-loopback host would send the key in clear text; use https:// or set api.allow_insecure_http"
        )
    }

    static func isLoopback(_ host: String) -> Bool {
        let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        if bare == "localhost" || bare == "::1" || bare.hasSuffix(".localhost") { return true }
        let octets = bare.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}

/// The checks of single values, used by the entries of ``ConfigurationKey/all``.
extension ConfigurationSetting {
    func duration(in range: ClosedRange<Duration>, allowed: String) throws(ConfigurationError) -> Duration {
        let text = string
        guard let parsed = DurationParsing.parse(text) else {
            throw refused("\"\(text)\" is not a duration (write a number and a unit: 500ms, 30s, 5m, 1h, 1d)")
        }
        guard range.contains(parsed) else { throw refused("\(text) is out of range (allowed \(allowed))") }
        return parsed
    }

    func double(in range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        guard case .double(let number) = value else { throw refused("expected a number") }
        guard number.isFinite, range.contains(number) else {
            throw refused("\(number) is out of range (allowed \(range.lowerBound) to \(range.upperBound))")
        }
        return number
    }

    /// Relative paths from the file are resolved against the file's directory, so the
    /// daemon and `recotap-keyctl` agree whatever their working directory. From the
    /// environment or a flag there is no file to resolve against, and a daemon under
    /// systemd runs in `/`: an absolute path is required there.
    func path() throws(ConfigurationError) -> String {
        let text = string
        guard !text.isEmpty else { throw refused("must not be empty") }
        if text.hasPrefix("/") { return Self.normalise(text) }
        guard case .file(let file) = origin else {
            throw refused("\"\(text)\" is relative; an absolute path is needed here (relative paths are only allowed in the configuration file, where they are relative to its directory)")
        }
        let base = URL(fileURLWithPath: file).deletingLastPathComponent().standardizedFileURL.path
        let absoluteBase = base.hasPrefix("/") ? base : FileManager.default.currentDirectoryPath + "/" + base
        return Self.normalise(absoluteBase + "/" + text)
    }

    private static func normalise(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.path
    }

    func socketMode() throws(ConfigurationError) -> UInt32 {
        let text = string
        guard (3...4).contains(text.count), let mode = UInt32(text, radix: 8), mode <= 0o777 else {
            throw refused("\"\(text)\" is not an octal mode (allowed 0600 to 0777, e.g. \"0660\")")
        }
        guard mode & 0o600 == 0o600 else {
            throw refused("\"\(text)\" must give the owner read and write (allowed 0600 to 0777)")
        }
        return mode
    }

    func baseURL() throws(ConfigurationError) -> String {
        var text = string
        while text.hasSuffix("/") { text.removeLast() }
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = url.host, !host.isEmpty
        else {
            throw refused("\"\(text)\" is not an http(s) URL such as https://eapi.recotap.com/api/v1")
        }
        guard url.query == nil, url.fragment == nil, url.user == nil, url.password == nil else {
            throw refused("must not carry a query, a fragment or credentials")
        }
        if let port = url.port, !(1...65535).contains(port) {
            throw refused("port \(port) is out of range (allowed 1 to 65535)")
        }
        return text
    }

    func proxy() throws(ConfigurationError) -> String? {
        let text = string
        guard !text.isEmpty else { return nil }
        // AsyncHTTPClient speaks plain HTTP CONNECT to a proxy; the API traffic inside
        // the tunnel is still TLS.
        guard let url = URLComponents(string: text), url.scheme?.lowercased() == "http",
            let host = url.host, !host.isEmpty
        else {
            throw refused("\"\(text)\" is not an http:// proxy URL such as http://proxy.example:3128")
        }
        if let port = url.port, !(1...65535).contains(port) {
            throw refused("port \(port) is out of range (allowed 1 to 65535)")
        }
        return text
    }

    private var list: [String] {
        if case .strings(let names) = value { return names }
        return []
    }

    func names() throws(ConfigurationError) -> [String] {
        for name in list {
            let valid = !name.isEmpty && name.count <= 32
                && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }
                && !name.hasPrefix("-")
            if !valid {
                throw refused("\"\(name)\" is not a user or group name")
            }
        }
        return list
    }

    func units() throws(ConfigurationError) -> [String] {
        let suffixes = [".service", ".socket", ".mount", ".timer", ".scope", ".slice", ".target", ".path", ".swap", ".device", ".automount"]
        for unit in list {
            let valid = suffixes.contains { unit.hasSuffix($0) && unit.count > $0.count }
                && unit.allSatisfy { $0.isASCII && !$0.isWhitespace && $0 != "/" }
            if !valid {
                throw refused("\"\(unit)\" is not a unit name (expected e.g. billing-sync.service)")
            }
        }
        return list
    }

    /// `source.command`: an argv list, run without a shell.
    func command() throws(ConfigurationError) -> [String] {
        let argv = list
        guard let program = argv.first else { return [] }
        if let bad = argv.firstIndex(where: { $0.utf8.contains(0) }) {
            throw refused("argument \(bad + 1) contains a NUL byte")
        }
        guard !program.isEmpty else { throw refused("the program (the first entry) is empty") }
        if program.contains("/") && !program.hasPrefix("/") {
            throw refused("\"\(TerminalSafe.escape(program))\" is a relative path; give an absolute path or a bare name looked up in PATH")
        }
        if program.contains(" ") && argv.count == 1 {
            throw refused("\"\(TerminalSafe.escape(program))\" holds spaces: the command is an argv list run without a shell, so write [program, argument, …]")
        }
        return argv
    }

    /// `source.environment`: `NAME=VALUE`, or a bare `NAME` (passed on from the
    /// daemon's environment), with a name a shell would accept.
    func environmentEntries() throws(ConfigurationError) -> [String] {
        for entry in list {
            let name = entry.firstIndex(of: "=").map { entry[..<$0] } ?? entry[...]
            let valid = !name.isEmpty && !name.first!.isNumber
                && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
            guard valid else { throw refused("\"\(TerminalSafe.escape(String(name)))\" is not an environment variable name") }
            guard !entry.utf8.contains(0) else { throw refused("the value of \(name) contains a NUL byte") }
        }
        return list
    }
}
