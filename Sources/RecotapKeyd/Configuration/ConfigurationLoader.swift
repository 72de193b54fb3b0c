import Configuration
import Foundation
import Logging
import SystemPackage
import Yams

/// Builds a ``KeydConfiguration`` from its three sources: the YAML file, the
/// `RECOTAP_KEYD_*` environment and command-line flags (flags win over the
/// environment, which wins over the file, which wins over the defaults).
///
/// swift-configuration does the layering and the typed reads. Before that, the file
/// and the environment are walked once against ``ConfigurationKey/all`` so that an
/// unknown key — usually a typo that would otherwise silently leave a default in
/// force — stops the start with its name.
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
        if let file, !file.keys.isEmpty {
            do {
                providers.append(
                    try await FileProvider<YAMLSnapshot>(filePath: FilePath(file.path))
                )
            } catch {
                throw ConfigurationError(key: nil, source: file.path, message: "cannot read: \(error)")
            }
        }
        let reader = ConfigReader(providers: providers)

        func source(of key: ConfigurationKey) -> Source? {
            if flags[key.name] != nil { return .flag(key.flag) }
            if environmentKeys.present.contains(key.name) { return .environment(key.environmentVariable) }
            if let file, file.keys.contains(key.name) { return .file(file.path) }
            return nil
        }

        var values = RawValues()
        for key in ConfigurationKey.all {
            guard let origin = source(of: key) else { continue }
            let configKey = ConfigKey(key.name.split(separator: ".").map(String.init))
            do {
                switch key.kind {
                case .string, .duration, .path:
                    values.strings[key.name] = try reader.requiredString(forKey: configKey)
                case .bool:
                    values.bools[key.name] = try reader.requiredBool(forKey: configKey)
                case .double:
                    values.doubles[key.name] = try reader.requiredDouble(forKey: configKey)
                case .stringArray:
                    values.arrays[key.name] = try reader.requiredStringArray(forKey: configKey)
                }
            } catch {
                throw ConfigurationError(
                    key: key.name, source: origin.description, message: "expected \(key.kind.expectation)")
            }
            values.origins[key.name] = origin
        }
        return try ConfigurationValidator(values: values).build()
    }

    // MARK: - Sources

    enum Source: CustomStringConvertible {
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
        /// Dotted names of the leaf keys the file sets.
        var keys: Set<String>
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
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError(key: nil, source: filePath, message: "not valid YAML: \(error)")
        }
        var keys: Set<String> = []
        // An empty file, one with only comments, or a bare `~` sets nothing.
        if let node, node.null == nil {
            guard case .mapping(let mapping) = node else {
                throw ConfigurationError(key: nil, source: filePath, message: "the top level must be a mapping of sections (api, check, spool, …)")
            }
            try Self.collectKeys(mapping, prefix: [], into: &keys, path: filePath)
        }
        return FileContents(path: filePath, keys: keys)
    }

    private static let sections: Set<String> = Set(
        ConfigurationKey.all.flatMap { key -> [String] in
            let parts = key.name.split(separator: ".")
            return (1..<parts.count).map { parts[0..<$0].joined(separator: ".") }
        }
    )

    private static func collectKeys(
        _ mapping: Node.Mapping, prefix: [String], into keys: inout Set<String>, path: String
    ) throws(ConfigurationError) {
        for (keyNode, value) in mapping {
            guard let name = keyNode.string else {
                throw ConfigurationError(key: prefix.joined(separator: "."), source: path, message: "keys must be plain strings")
            }
            let dotted = (prefix + [name]).joined(separator: ".")
            if sections.contains(dotted) {
                switch value {
                case .mapping(let inner):
                    try collectKeys(inner, prefix: prefix + [name], into: &keys, path: path)
                case .scalar where value.null != nil:
                    continue  // `check:` with nothing under it
                default:
                    throw ConfigurationError(key: dotted, source: path, message: "expected a section (a mapping of keys)")
                }
            } else if let key = ConfigurationKey.named(dotted) {
                switch (key.kind, value) {
                case (.stringArray, .sequence(let sequence)):
                    if sequence.contains(where: { $0.scalar == nil }) {
                        throw ConfigurationError(key: dotted, source: path, message: "expected \(key.kind.expectation)")
                    }
                case (.stringArray, _), (_, .sequence), (_, .mapping):
                    throw ConfigurationError(key: dotted, source: path, message: "expected \(key.kind.expectation)")
                default:
                    break
                }
                keys.insert(dotted)
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

/// The typed values read from the sources, before range checks.
struct RawValues {
    var strings: [String: String] = [:]
    var bools: [String: Bool] = [:]
    var doubles: [String: Double] = [:]
    var arrays: [String: [String]] = [:]
    var origins: [String: ConfigurationLoader.Source] = [:]
}
