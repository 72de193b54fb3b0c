import Configuration
import Foundation
import Logging
import Yams

/// Builds a ``KeydConfiguration`` from its three sources: the YAML file, the
/// `RECOTAP_KEYD_*` environment and command-line flags (flags win over the
/// environment, which wins over the file, which wins over the defaults).
///
/// swift-configuration does the layering and the typed reads. The file is parsed once,
/// by Yams, and walked against ``ConfigurationKey/all`` — so that an unknown key,
/// usually a typo that would otherwise silently leave a default in force, stops the
/// start with its name — and its values reach swift-configuration as an
/// `InMemoryProvider`: its `FileProvider<YAMLSnapshot>` would parse the file a second
/// time and does not tell which keys a file sets. The environment is walked the same
/// way before `EnvironmentVariablesProvider` reads it.
public struct ConfigurationLoader: Sendable {
    /// The YAML file; `nil` reads nothing.
    public var filePath: String?
    /// Whether a missing file is an error (true when the operator named it).
    public var fileRequired: Bool
    public var environment: [String: String]
    /// Flag values by dotted key name, as produced by ``parseFlags(_:)``.
    public var flags: [String: String]

    public init(
        filePath: String?,
        fileRequired: Bool,
        environment: [String: String],
        flags: [String: String] = [:]
    ) {
        self.filePath = filePath
        self.fileRequired = fileRequired
        self.environment = environment
        self.flags = flags
    }

    /// Turns `--check-interval 30s` / `--check-interval=30s` pairs into
    /// `["check.interval": "30s"]`; anything that is not a known key's flag is refused.
    public static func parseFlags(_ arguments: [String]) throws(ConfigurationError) -> [String: String] {
        var result: [String: String] = [:]
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name: String
            let value: String
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                value = String(argument[argument.index(after: equals)...])
            } else {
                guard index + 1 < arguments.count else {
                    if ConfigurationKey.all.contains(where: { $0.flag == argument }) {
                        throw ConfigurationError(key: nil, source: argument, message: "missing value")
                    }
                    throw ConfigurationError(key: nil, source: argument, message: "unknown option")
                }
                name = argument
                value = arguments[index + 1]
                index += 1
            }
            guard let key = ConfigurationKey.all.first(where: { $0.flag == name }) else {
                throw ConfigurationError(key: nil, source: name, message: "unknown option")
            }
            result[key.name] = value
            index += 1
        }
        return result
    }

    public func load() async throws(ConfigurationError) -> KeydConfiguration {
        let file = try readFile()
        let environmentKeys = try environmentOverrides()
        let flagValues = try flagProviderValues()

        var providers: [any ConfigProvider] = [
            InMemoryProvider(name: "flags", values: flagValues),
            EnvironmentVariablesProvider(environmentVariables: environmentKeys.variables)
                .prefixKeys(with: ConfigKey(["recotap_keyd"])),
        ]
        if let file, !file.values.isEmpty {
            providers.append(InMemoryProvider(name: file.path, values: file.values))
        }
        let reader = ConfigReader(providers: providers)

        func source(of key: ConfigurationKey) -> Source? {
            if flags[key.name] != nil { return .flag(key.flag) }
            if environmentKeys.present.contains(key.name) { return .environment(key.environmentVariable) }
            if let file, file.values[Self.configKey(key.name)] != nil { return .file(file.path) }
            return nil
        }

        var settings: [String: ConfigurationSetting] = [:]
        for key in ConfigurationKey.all {
            guard let origin = source(of: key) else { continue }
            let configKey = ConfigKey(key.name.split(separator: ".").map(String.init))
            let value: ConfigurationSetting.Value
            do {
                switch key.kind {
                case .string, .duration, .path: value = .string(try reader.requiredString(forKey: configKey))
                case .bool: value = .bool(try reader.requiredBool(forKey: configKey))
                case .double: value = .double(try reader.requiredDouble(forKey: configKey))
                case .stringArray: value = .strings(try reader.requiredStringArray(forKey: configKey))
                }
            } catch {
                throw ConfigurationError(
                    key: key.name, source: origin.description, message: "expected \(key.kind.expectation)")
            }
            settings[key.name] = ConfigurationSetting(key: key.name, value: value, origin: origin)
        }
        return try ConfigurationValidator(settings: settings).build()
    }

    private static func configKey(_ name: String) -> AbsoluteConfigKey {
        AbsoluteConfigKey(name.split(separator: ".").map(String.init))
    }

    // MARK: - Sources

    enum Source: CustomStringConvertible, Sendable {
        case file(String), environment(String), flag(String)
        var description: String {
            switch self {
            case .file(let path): path
            case .environment(let name): "environment variable \(name)"
            case .flag(let flag): "flag \(flag)"
            }
        }
    }

    private struct FileContents {
        var path: String
        /// The values the file sets, typed by their keys' kinds.
        var values: [AbsoluteConfigKey: ConfigValue]
    }

    private func readFile() throws(ConfigurationError) -> FileContents? {
        guard let filePath else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: filePath, encoding: .utf8)
        } catch {
            if !fileRequired, !FileManager.default.fileExists(atPath: filePath) { return nil }
            throw ConfigurationError(key: nil, source: filePath, message: "cannot read the file: \(Self.reason(error))")
        }
        let node: Node?
        do {
            // The basic resolver tags no scalar: `content(of:as:)` reads each as its
            // key's kind. (The default one matches every scalar against regular
            // expressions: NSRegularExpression, ICU — 1 MiB more resident for nothing.)
            node = try Yams.compose(yaml: text, .basic)
        } catch {
            throw ConfigurationError(key: nil, source: filePath, message: "not valid YAML: \(error)")
        }
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        // An empty file, one with only comments, or a bare `~` sets nothing.
        if let node, node.null == nil {
            guard case .mapping(let mapping) = node else {
                throw ConfigurationError(key: nil, source: filePath, message: "the top level must be a mapping of sections (api, check, spool, …)")
            }
            try Self.collectValues(mapping, prefix: [], into: &values, path: filePath)
        }
        return FileContents(path: filePath, values: values)
    }

    private static let sections: Set<String> = Set(
        ConfigurationKey.all.flatMap { key -> [String] in
            let parts = key.name.split(separator: ".")
            return (1..<parts.count).map { parts[0..<$0].joined(separator: ".") }
        }
    )

    private static func collectValues(
        _ mapping: Node.Mapping, prefix: [String], into values: inout [AbsoluteConfigKey: ConfigValue], path: String
    ) throws(ConfigurationError) {
        for (keyNode, value) in mapping {
            guard let name = keyNode.string else {
                throw ConfigurationError(key: prefix.joined(separator: "."), source: path, message: "keys must be plain strings")
            }
            let dotted = (prefix + [name]).joined(separator: ".")
            if sections.contains(dotted) {
                switch value {
                case .mapping(let inner):
                    try collectValues(inner, prefix: prefix + [name], into: &values, path: path)
                case .scalar where value.null != nil:
                    continue  // `check:` with nothing under it
                default:
                    throw ConfigurationError(key: dotted, source: path, message: "expected a section (a mapping of keys)")
                }
            } else if let key = ConfigurationKey.named(dotted) {
                guard let content = content(of: value, as: key.kind) else {
                    throw ConfigurationError(key: dotted, source: path, message: "expected \(key.kind.expectation)")
                }
                values[configKey(dotted)] = ConfigValue(content, isSecret: false)
            } else {
                let section = prefix.joined(separator: ".")
                let known = ConfigurationKey.all.map(\.name).filter {
                    section.isEmpty ? true : $0.hasPrefix(section + ".")
                }
                let hint = section.isEmpty
                    ? "known sections: " + Set(known.map { String($0.split(separator: ".")[0]) }).sorted().joined(separator: ", ")
                    : "known keys here: " + known.joined(separator: ", ")
                throw ConfigurationError(key: dotted, source: path, message: "unknown key (\(hint))")
            }
        }
    }

    /// A YAML value as the kind of its key; `nil` when it is not one (a `null` is none).
    private static func content(of node: Node, as kind: ConfigurationKey.Kind) -> ConfigContent? {
        switch (kind, node) {
        case (.stringArray, .sequence(let sequence)):
            let names = sequence.compactMap(\.scalar?.string)
            return names.count == sequence.count ? .stringArray(names) : nil
        case (.stringArray, _), (_, .sequence), (_, .mapping), (_, .alias):
            return nil
        case (_, .scalar(let scalar)):
            // `ca_file:` with nothing after it is the empty string, as `""` is.
            if scalar.string.isEmpty, [.string, .path, .duration].contains(kind) { return .string("") }
            guard node.null == nil else { return nil }
            switch kind {
            case .string, .path, .duration: return .string(scalar.string)
            case .bool:
                // YAML 1.1's words, unquoted; a quoted "true" is a string.
                guard scalar.style == .plain else { return nil }
                switch scalar.string.lowercased() {
                case "true", "yes", "on": return .bool(true)
                case "false", "no", "off": return .bool(false)
                default: return nil
                }
            case .double:
                guard scalar.style == .plain, let number = Double(scalar.string), number.isFinite else { return nil }
                return .double(number)
            case .stringArray: return nil
            }
        }
    }

    private struct EnvironmentOverrides {
        var variables: [String: String]
        var present: Set<String>
    }

    private func environmentOverrides() throws(ConfigurationError) -> EnvironmentOverrides {
        var variables: [String: String] = [:]
        var present: Set<String> = []
        for (name, value) in environment where name.hasPrefix("RECOTAP_KEYD_") {
            guard let key = ConfigurationKey.all.first(where: { $0.environmentVariable == name }) else {
                throw ConfigurationError(
                    key: name, source: "environment",
                    message: "unknown environment variable (known: RECOTAP_KEYD_<SECTION>_<KEY>, e.g. RECOTAP_KEYD_API_BASE_URL)")
            }
            variables[name] = value
            present.insert(key.name)
        }
        return EnvironmentOverrides(variables: variables, present: present)
    }

    private func flagProviderValues() throws(ConfigurationError) -> [AbsoluteConfigKey: ConfigValue] {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (name, raw) in flags {
            guard let key = ConfigurationKey.named(name) else {
                throw ConfigurationError(key: name, source: "flags", message: "unknown key")
            }
            let content: ConfigContent
            switch key.kind {
            case .string, .path, .duration:
                content = .string(raw)
            case .bool:
                switch raw.lowercased() {
                case "true", "yes", "1", "on": content = .bool(true)
                case "false", "no", "0", "off": content = .bool(false)
                default:
                    throw ConfigurationError(key: name, source: "flag \(key.flag)", message: "expected \(key.kind.expectation)")
                }
            case .double:
                guard let number = Double(raw) else {
                    throw ConfigurationError(key: name, source: "flag \(key.flag)", message: "expected \(key.kind.expectation)")
                }
                content = .double(number)
            case .stringArray:
                content = .stringArray(raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            }
            values[AbsoluteConfigKey(name.split(separator: ".").map(String.init))] = ConfigValue(content, isSecret: false)
        }
        return values
    }

    static func reason(_ error: any Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if nsError.domain == NSCocoaErrorDomain, nsError.code == NSFileReadNoSuchFileError {
            return "no such file"
        }
        return nsError.localizedDescription
    }
}

extension ConfigurationKey.Kind {
    var expectation: String {
        switch self {
        case .string: "a string"
        case .path: "a file system path"
        case .bool: "true or false"
        case .double: "a number"
        case .duration: "a duration such as 30s, 5m or 1h"
        case .stringArray: "a list of names (in YAML [a, b]; in the environment or a flag a,b)"
        }
    }
}
