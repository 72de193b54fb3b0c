import Foundation
import Logging

/// Range and shape checks, and resolution of relative paths. Every refusal names the
/// key and, for ranges, the allowed range.
struct ConfigurationValidator {
    let values: RawValues

    func build() throws(ConfigurationError) -> KeydConfiguration {
        var config = KeydConfiguration.defaults

        config.api.baseURL = try baseURL()
        config.api.timeout = try duration("api.timeout", default: config.api.timeout, in: .seconds(1) ... .seconds(300))
        config.api.caFile = try optionalPath("api.ca_file")
        config.api.proxy = try proxy()
        config.api.allowInsecureHTTP = values.bools["api.allow_insecure_http"] ?? config.api.allowInsecureHTTP
        try refuseInsecureHTTP(config.api)

        var check = config.check
        check.interval = try duration("check.interval", default: check.interval, in: .seconds(10) ... .seconds(86_400))
        check.jitter = try double("check.jitter", default: check.jitter, in: 0 ... 0.5)
        check.confirmDelay = try duration("check.confirm_delay", default: check.confirmDelay, in: .zero ... .seconds(300))
        check.backoffMin = try duration("check.backoff_min", default: check.backoffMin, in: .seconds(1) ... .seconds(3600))
        check.backoffMax = try duration("check.backoff_max", default: check.backoffMax, in: .seconds(1) ... .seconds(86_400))
        if check.backoffMax < check.backoffMin {
            throw error(
                "check.backoff_max",
                "must not be shorter than check.backoff_min (\(DurationParsing.format(check.backoffMin)))")
        }
        check.reportMinInterval = try duration(
            "check.report_min_interval", default: check.reportMinInterval, in: .zero ... .seconds(3600))
        check.reminderInterval = try duration(
            "check.reminder_interval", default: check.reminderInterval, in: .seconds(60) ... .seconds(7 * 86_400))
        config.check = check

        config.spool.directory = try path("spool.directory", default: config.spool.directory)
        config.spool.verifyBeforeActivate = values.bools["spool.verify_before_activate"] ?? config.spool.verifyBeforeActivate
        config.store.path = try path("store.path", default: config.store.path)
        config.sockets.api = try socketPath("sockets.api", default: config.sockets.api)
        config.sockets.credential = try socketPath("sockets.credential", default: config.sockets.credential)
        if config.sockets.api == config.sockets.credential {
            throw error("sockets.credential", "must differ from sockets.api")
        }
        config.sockets.mode = try socketMode()

        config.access.readers.users = try names("access.readers.users", default: config.access.readers.users)
        config.access.readers.groups = try names("access.readers.groups", default: config.access.readers.groups)
        config.access.admins.users = try names("access.admins.users", default: config.access.admins.users)
        config.access.admins.groups = try names("access.admins.groups", default: config.access.admins.groups)
        config.access.units = try units()

        if let target = values.strings["log.target"] {
            guard let parsed = KeydConfiguration.LogTarget(rawValue: target) else {
                throw error("log.target", "\"\(target)\" is not one of journal, console, auto")
            }
            config.log.target = parsed
        }
        if let level = values.strings["log.level"] {
            guard let parsed = Logger.Level(rawValue: level) else {
                let allowed = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                throw error("log.level", "\"\(level)\" is not one of \(allowed)")
            }
            config.log.level = parsed
        }
        return config
    }

    // MARK: - Helpers

    private func error(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(key: key, source: values.origins[key]?.description, message: message)
    }

    private func duration(
        _ key: String, default value: Duration, in range: ClosedRange<Duration>
    ) throws(ConfigurationError) -> Duration {
        guard let text = values.strings[key] else { return value }
        guard let parsed = DurationParsing.parse(text) else {
            throw error(key, "\"\(text)\" is not a duration (write a number and a unit: 500ms, 30s, 5m, 1h, 1d)")
        }
        guard range.contains(parsed) else {
            throw error(
                key,
                "\(text) is out of range (allowed \(DurationParsing.format(range.lowerBound)) to \(DurationParsing.format(range.upperBound)))"
            )
        }
        return parsed
    }

    private func double(_ key: String, default value: Double, in range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        guard let number = values.doubles[key] else { return value }
        guard number.isFinite, range.contains(number) else {
            throw error(key, "\(number) is out of range (allowed \(range.lowerBound) to \(range.upperBound))")
        }
        return number
    }

    /// Relative paths from the file are resolved against the file's directory, so the
    /// daemon and `recotap-keyctl` agree whatever their working directory. From the
    /// environment or a flag there is no file to resolve against, and a daemon under
    /// systemd runs in `/`: an absolute path is required there.
    private func path(_ key: String, default value: String) throws(ConfigurationError) -> String {
        guard let text = values.strings[key] else { return value }
        guard !text.isEmpty else { throw error(key, "must not be empty") }
        if text.hasPrefix("/") { return Self.normalise(text) }
        guard case .file(let file) = values.origins[key] else {
            throw error(key, "\"\(text)\" is relative; an absolute path is needed here (relative paths are only allowed in the configuration file, where they are relative to its directory)")
        }
        let base = URL(fileURLWithPath: file).deletingLastPathComponent().standardizedFileURL.path
        let absoluteBase = base.hasPrefix("/") ? base : FileManager.default.currentDirectoryPath + "/" + base
        return Self.normalise(absoluteBase + "/" + text)
    }

    private static func normalise(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.path
    }

    private func optionalPath(_ key: String) throws(ConfigurationError) -> String? {
        guard let text = values.strings[key], !text.isEmpty else { return nil }
        return try path(key, default: text)
    }

    private func socketPath(_ key: String, default value: String) throws(ConfigurationError) -> String {
        let resolved = try path(key, default: value)
        // sun_path holds 108 bytes including the terminating NUL.
        guard resolved.utf8.count <= 107 else {
            throw error(key, "\(resolved) is \(resolved.utf8.count) bytes long; a Unix socket path may have at most 107")
        }
        return resolved
    }

    private func socketMode() throws(ConfigurationError) -> UInt32 {
        guard let text = values.strings["sockets.mode"] else { return KeydConfiguration.defaults.sockets.mode }
        guard (3...4).contains(text.count), let mode = UInt32(text, radix: 8), mode <= 0o777 else {
            throw error("sockets.mode", "\"\(text)\" is not an octal mode (allowed 0600 to 0777, e.g. \"0660\")")
        }
        guard mode & 0o600 == 0o600 else {
            throw error("sockets.mode", "\"\(text)\" must give the owner read and write (allowed 0600 to 0777)")
        }
        return mode
    }

    private func baseURL() throws(ConfigurationError) -> String {
        guard var text = values.strings["api.base_url"] else { return KeydConfiguration.defaults.api.baseURL }
        while text.hasSuffix("/") { text.removeLast() }
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = url.host, !host.isEmpty
        else {
            throw error("api.base_url", "\"\(text)\" is not an http(s) URL such as https://eapi.recotap.com/api/v1")
        }
        guard url.query == nil, url.fragment == nil, url.user == nil, url.password == nil else {
            throw error("api.base_url", "must not carry a query, a fragment or credentials")
        }
        if let port = url.port, !(1...65535).contains(port) {
            throw error("api.base_url", "port \(port) is out of range (allowed 1 to 65535)")
        }
        return text
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

    private func proxy() throws(ConfigurationError) -> String? {
        guard let text = values.strings["api.proxy"], !text.isEmpty else { return nil }
        // AsyncHTTPClient speaks plain HTTP CONNECT to a proxy; the API traffic inside
        // the tunnel is still TLS.
        guard let url = URLComponents(string: text), url.scheme?.lowercased() == "http",
            let host = url.host, !host.isEmpty
        else {
            throw error("api.proxy", "\"\(text)\" is not an http:// proxy URL such as http://proxy.example:3128")
        }
        if let port = url.port, !(1...65535).contains(port) {
            throw error("api.proxy", "port \(port) is out of range (allowed 1 to 65535)")
        }
        return text
    }

    private func names(_ key: String, default value: [String]) throws(ConfigurationError) -> [String] {
        guard let list = values.arrays[key] else { return value }
        for name in list {
            let valid = !name.isEmpty && name.count <= 32
                && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }
                && !name.hasPrefix("-")
            if !valid {
                throw error(key, "\"\(name)\" is not a user or group name")
            }
        }
        return list
    }

    private func units() throws(ConfigurationError) -> [String] {
        guard let list = values.arrays["access.units"] else { return [] }
        let suffixes = [".service", ".socket", ".mount", ".timer", ".scope", ".slice", ".target", ".path", ".swap", ".device", ".automount"]
        for unit in list {
            let valid = suffixes.contains { unit.hasSuffix($0) && unit.count > $0.count }
                && unit.allSatisfy { $0.isASCII && !$0.isWhitespace && $0 != "/" }
            if !valid {
                throw error("access.units", "\"\(unit)\" is not a unit name (expected e.g. billing-sync.service)")
            }
        }
        return list
    }
}
