import Foundation

/// A local AWS Secrets Manager API: moto's server (`pip install 'moto[server]'`), on
/// loopback, and the real AWS CLI (`pip install awscli`) to talk to it — the recipe of
/// README "Fleets" as an operator runs it. Both come from the Python that `python3`
/// runs; tests that need them are skipped when they are not installed.
final class MotoServer {
    /// The directory holding `aws` and `moto_server`, when both are installed.
    static let binDirectory: String? = {
        // Where pip puts this interpreter's commands (next to it under pyenv or a venv,
        // /usr/local/bin for Debian's own python3).
        guard let result = try? runCommandBlocking(
            ["/usr/bin/env", "python3", "-c", "import sysconfig; print(sysconfig.get_path('scripts'))"],
            timeout: .seconds(30)),
            result.status == 0
        else { return nil }
        let directory = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let needed = ["aws", "moto_server"].map { directory + "/" + $0 }
        return needed.allSatisfy(FileManager.default.isExecutableFile(atPath:)) ? directory : nil
    }()
    static var available: Bool { binDirectory != nil }

    let process = Process()
    let port: Int
    let log: String
    var endpoint: String { "http://127.0.0.1:\(port)" }
    /// What the AWS CLI needs to talk to moto: fake credentials, a region, no retries.
    static let environment = [
        "AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_DEFAULT_REGION=us-east-1",
        "AWS_MAX_ATTEMPTS=1", "AWS_EC2_METADATA_DISABLED=true",
    ]

    /// Starts moto's server on a free loopback port and waits (without blocking a
    /// thread of the cooperative pool) until it accepts connections.
    init(in dir: TemporaryDirectory) async throws {
        guard let bin = Self.binDirectory else { throw TestHTTPError.malformed("moto_server and aws are not installed") }
        port = try freeTCPPort()
        log = dir.file("moto.log")
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: bin + "/moto_server")
        process.arguments = ["-H", "127.0.0.1", "-p", String(port)]
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let port = self.port
        guard try await eventually(timeout: .seconds(30), { Self.accepts(port: port) }) else {
            kill(process.processIdentifier, SIGKILL)
            throw TestHTTPError.malformed("moto_server did not listen on \(port)")
        }
    }

    /// The `aws` command line for `arguments`, against this server.
    func aws(_ arguments: [String]) -> [String] {
        ["/usr/bin/env"] + Self.environment + [Self.binDirectory! + "/aws", "--endpoint-url", endpoint] + arguments
    }

    /// Runs `aws secretsmanager …`; throws when it fails.
    func secretsManager(_ arguments: [String]) async throws {
        let result = try await runCommand(aws(["secretsmanager"] + arguments), timeout: .seconds(60))
        guard result.status == 0 else { throw TestHTTPError.malformed("aws \(arguments.first ?? ""): \(result.stderr)") }
    }

    /// How many GetSecretValue requests moto has answered (its access log).
    var getSecretValueCount: Int {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return text.components(separatedBy: "\n").filter { $0.contains("POST / HTTP") }.count
    }

    /// SIGKILL (moto's server does not end on SIGTERM), then waits until its port is
    /// closed, asleep between looks.
    func stop() async {
        kill(process.processIdentifier, SIGKILL)
        let port = self.port
        _ = try? await eventually(timeout: .seconds(10)) { !Self.accepts(port: port) }
    }

    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
