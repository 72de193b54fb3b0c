import Foundation
import Testing

@testable import RecotapKeyd

/// What operators install besides the binaries: `--version` with the build's git
/// revision, `recotap-keyd.yaml(5)` written from the key table, shell completions.
@Suite("install: --version, the configuration manual, completions")
struct InstallTests {
    /// The revision `make` wrote for this build, if it did.
    private var builtRevision: String? {
        guard let header = try? String(contentsOfFile: repositoryRoot + "/Sources/CBuildInfo/revision.h", encoding: .utf8),
            let open = header.firstIndex(of: "\""), let close = header.lastIndex(of: "\""), open < close
        else { return nil }
        return String(header[header.index(after: open)..<close])
    }

    @Test("every binary's --version prints the version and the git revision of the build", arguments: [
        "recotap-keyd", "recotap-keyctl", "recotap-api-mock", "recotap-keyd-bench",
    ])
    func version(binary: String) async throws {
        let path = productsDirectory + "/" + binary
        try #require(FileManager.default.isExecutableFile(atPath: path), "\(binary) is not built")
        let result = try await runCommand([path, "--version"])
        #expect(result.status == 0)
        let line = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line == "\(KeydVersion.current) (git \(KeydVersion.revision))", "\(line)")
        if let builtRevision {
            #expect(KeydVersion.revision == builtRevision)
        }
        #expect(KeydVersion.revision == "unknown" || KeydVersion.revision.range(of: "^[0-9a-f]{7,40}(-dirty)?$|^v?[0-9]", options: .regularExpression) != nil)
    }

    @Test("recotap-keyd called as recotap-keyctl (the installed symlink) is recotap-keyctl: its help, its version, its exit codes")
    func multiCall() async throws {
        let dir = try TemporaryDirectory()
        let link = dir.file("recotap-keyctl")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: productsDirectory + "/recotap-keyd")
        let help = try await runCommand([link, "--help"])
        #expect(help.status == 0)
        #expect(help.output.contains("USAGE: recotap-keyctl <subcommand>"), "\(help.output.prefix(200))")
        let version = try await runCommand([link, "--version"])
        #expect(version.output.trimmingCharacters(in: .whitespacesAndNewlines) == KeydVersion.full)
        // A subcommand runs, with recotap-keyctl's exit code for "not running".
        let status = try await runCommand([link, "status", "--socket", dir.file("none.sock")])
        #expect(status.status == 6, "\(status.stderr)")
        #expect(status.stderr.contains("recotap-keyctl: recotap-keyd is not running"), "\(status.stderr)")
        // By its own name, the daemon is still the daemon.
        let daemon = try await runCommand([productsDirectory + "/recotap-keyd", "--help"])
        #expect(daemon.output.contains("USAGE: recotap-keyd"))
        #expect(!daemon.output.contains("<subcommand>"))
    }

    @Test("the daemon's tasks run on SwiftNIO's event loops (the runtime's hook found and called), as its debug log says")
    func concurrencyOnEventLoops() async throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("spool"), withIntermediateDirectories: true)
        try "log:\n  level: info\n".write(toFile: dir.file("keyd.yaml"), atomically: true, encoding: .utf8)
        let result = try await runCommand([
            "/usr/bin/timeout", "3", productsDirectory + "/recotap-keyd", "--config", dir.file("keyd.yaml"),
            "--log-level", "debug", "--log-target", "console", "--api-base-url", "http://127.0.0.1:9/api/v1",
            "--spool-directory", dir.file("spool"), "--store-path", dir.file("state/keyd.sqlite3"),
            "--sockets-api", dir.file("api.sock"), "--sockets-credential", dir.file("credential.sock"),
            "--sockets-generation-file", "",
        ])
        let log = result.output + result.stderr
        #expect(log.contains("started"), "\(log.suffix(400))")
        #expect(log.contains("Swift concurrency runs on SwiftNIO's event loops"), "\(log.suffix(400))")
    }

    @Test("the Debian package's version (debian/changelog) is the binaries' version, and its control file builds the package make deb names")
    func debianVersion() throws {
        let changelog = try String(contentsOfFile: repositoryRoot + "/debian/changelog", encoding: .utf8)
        let first = try #require(changelog.split(separator: "\n").first)
        #expect(first.hasPrefix("recotap-keyd (\(KeydVersion.current)) "), "\(first)")
        let control = try String(contentsOfFile: repositoryRoot + "/debian/control", encoding: .utf8)
        #expect(control.contains("\nPackage: recotap-keyd\n"))
        #expect(control.contains("debhelper-compat (= 13)"))
    }

    @Test("recotap-keyd.yaml(5) names every key with its default, environment variable and flag, and mandoc -T lint finds nothing")
    func manual() async throws {
        let result = try await runCommand([productsDirectory + "/recotap-keyd", "--config-manual"])
        #expect(result.status == 0)
        let page = result.output
        #expect(page.hasPrefix(".TH RECOTAP-KEYD.YAML 5"))
        func roff(_ text: String) -> String { ConfigurationManual.escape(text) }
        for key in ConfigurationKey.all {
            #expect(page.contains(".B \(roff(key.name))\n"), "\(key.name)")
            #expect(page.contains(roff(key.environmentVariable)), "\(key.environmentVariable)")
            #expect(page.contains(roff(key.flag)), "\(key.flag)")
            if let range = key.range { #expect(page.contains(roff(range).split(separator: " ").first!), "\(key.name)'s range") }
        }
        #expect(page.contains("Default: 5m."), "check.interval's default from the defaults")
        #expect(page.contains("Default: [recotap\\-key]."), "access.readers.groups")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/mandoc") {
            let lint = try await runCommand(["/usr/bin/mandoc", "-T", "lint"], input: Data(page.utf8))
            #expect(lint.status == 0, "\(lint.output) \(lint.stderr)")
        }
    }

    @Test("each key's shown default reads back through the loader as the default")
    func defaultsReadBack() async throws {
        let dir = try TemporaryDirectory()
        var yaml = ""
        var sections: [String: [String]] = [:]
        var order: [String] = []
        for key in ConfigurationKey.all {
            let shown = key.show(KeydConfiguration.defaults)
            let parts = key.name.split(separator: ".", maxSplits: 1).map(String.init)
            if sections[parts[0]] == nil { order.append(parts[0]) }
            let value = switch key.kind {
            case .bool, .double, .stringArray: shown
            case .string, .path, .duration: "\"\(shown)\""
            }
            let nested = parts[1].split(separator: ".")
            sections[parts[0], default: []].append(nested.count == 2 ? "  \(nested[0]): { \(nested[1]): \(value) }" : "  \(parts[1]): \(value)")
        }
        for section in order { yaml += "\(section):\n" + sections[section]!.joined(separator: "\n") + "\n" }
        // access.readers.users and .groups both nest under readers: merge the flow maps.
        yaml = yaml.replacingOccurrences(of: "  readers: { users: [] }\n  readers: { groups: [recotap-key] }", with: "  readers: { users: [], groups: [recotap-key] }")
            .replacingOccurrences(of: "  admins: { users: [] }\n  admins: { groups: [recotap-key-admin] }", with: "  admins: { users: [], groups: [recotap-key-admin] }")
            .replacingOccurrences(of: "  readers: { users: [] }\n  readers: { groups: [] }", with: "  readers: { users: [], groups: [] }")
        let path = try dir.write("defaults.yaml", yaml)
        let loaded = try await ConfigurationLoader(filePath: path, fileRequired: true, environment: [:], flags: [:]).load()
        #expect(loaded == KeydConfiguration.defaults, "\(yaml)")
    }
}
