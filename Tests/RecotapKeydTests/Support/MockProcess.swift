import Foundation

/// The `recotap-api-mock` executable as a child process, driven over its HTTP
/// control API, for tests that want the very program an operator would run.
final class MockProcess {
    let process = Process()
    let port: Int
    /// The line it printed on start.
    let banner: String
    var baseURL: String { "http://127.0.0.1:\(port)/api/v1" }

    init(keys: [String], in dir: TemporaryDirectory) throws {
        let keysFile = try dir.write("mock-keys", keys.joined(separator: "\n") + "\n")
        process.executableURL = URL(fileURLWithPath: productsDirectory + "/recotap-api-mock")
        process.arguments = ["--port", "0", "--keys-file", keysFile]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        // "recotap-api-mock listening on http://127.0.0.1:PORT/api/v1 (N valid key(s))"
        var line = ""
        while !line.hasSuffix("\n") {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty { break }
            line += String(decoding: byte, as: UTF8.self)
        }
        guard let url = line.split(separator: " ").first(where: { $0.hasPrefix("http://") }),
            let port = Int(url.split(separator: ":")[2].split(separator: "/")[0])
        else {
            process.terminate()
            throw TestHTTPError.malformed("recotap-api-mock printed: \(line)")
        }
        self.port = port
        banner = line
    }

    /// POST /_mock/regenerate: every old key dies; returns the new one.
    @discardableResult
    func regenerate() throws -> String {
        let response = try httpRequest(port: port, method: "POST", path: "/_mock/regenerate", body: Data("{}".utf8))
        return response.json["key"] as? String ?? ""
    }

    /// GET /_mock/requests.
    func requests() throws -> [[String: Any]] {
        let response = try httpRequest(port: port, path: "/_mock/requests")
        return (try? JSONSerialization.jsonObject(with: response.body) as? [[String: Any]]) ?? []
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}
