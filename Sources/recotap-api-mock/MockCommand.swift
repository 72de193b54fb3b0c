import ArgumentParser
import Foundation
import CBuildInfo
import RecotapAPIMock

@main
struct MockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recotap-api-mock",
        abstract: "A local mock of the Recotap External API, for trying recotap-keyd and testing consumers offline.",
        discussion: """
            API:      GET /api/v1/accounts?limit=N with X-Api-Key
            Control:  PUT /_mock/keys {"keys": [...]}      POST /_mock/keys {"key": "..."}
                      POST /_mock/regenerate {"old": "...", "new": "..."} (both optional)
                      POST /_mock/faults {"kind": "status|rate_limit|delay|drop|redirect|unauthorized_bare|non_json_success",
                                          "status": 503, "retry_after": "30", "delay_ms": 2000, "location": "...", "count": 1}
                      DELETE /_mock/faults    GET|DELETE /_mock/requests    GET /_mock/state
            """,
        version: "\(RECOTAP_VERSION) (git \(String(cString: recotap_git_revision())))"
    )

    @Option(help: "Port to listen on (0 picks a free one).")
    var port: Int = 8089

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(name: .customLong("key"), help: "A key the mock accepts (repeatable). Keys are never printed.")
    var keys: [String] = []

    @Option(help: "Read accepted keys from this file, one per line (keeps them out of the process list).")
    var keysFile: String?

    func run() async throws {
        let api = try await MockRecotapAPI.start(host: host, port: port)
        var accepted = keys
        if let keysFile {
            let text = try String(contentsOfFile: keysFile, encoding: .utf8)
            accepted += text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        api.setValidKeys(accepted)
        print("recotap-api-mock listening on \(api.baseURL) (\(accepted.count) valid key(s))")
        fflush(nil)
        // Serve until killed.
        while true {
            try await Task.sleep(for: .seconds(3600))
        }
    }
}
