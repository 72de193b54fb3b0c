import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RecotapKeyd
#if canImport(Glibc)
import Glibc
#endif

/// Exit codes of `recotap-keyctl` (README, "recotap-keyctl").
enum KeyctlExit: Int32 {
    case success = 0
    /// A check that did not say `valid`, or any other failure.
    case failure = 1
    case noKey = 3
    case keyInvalid = 4
    case accessDenied = 5
    case notRunning = 6
    case rejected = 7
    case timedOut = 8
}

/// A failure with the words for the operator and the exit code for scripts.
struct KeyctlError: Error, CustomStringConvertible {
    var exit: KeyctlExit
    var message: String
    var description: String { message }
}

/// One answer from `keyd.sock`.
struct DaemonResponse {
    var status: Int
    var headers: HTTPHeaders
    var body: String

    /// The body as `type`, for showing to a person: every string in it escaped
    /// (``TerminalSafe``), since file names and reasons come from outside. `nil` when
    /// the body is not one.
    func decoded<Body: Decodable>(_ type: Body.Type) -> Body? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8), options: [.fragmentsAllowed]),
            let safe = try? JSONSerialization.data(withJSONObject: Self.escapingStrings(object), options: [.fragmentsAllowed])
        else { return nil }
        return WireJSON.decode(type, from: String(decoding: safe, as: UTF8.self))
    }

    private static func escapingStrings(_ object: Any) -> Any {
        switch object {
        case let text as String: TerminalSafe.escape(text)
        case let array as [Any]: array.map(escapingStrings)
        case let members as [String: Any]: members.mapValues(escapingStrings)
        default: object
        }
    }

    /// A header's value, escaped as ``decoded(_:)`` escapes strings.
    func header(_ name: String) -> String? { headers.first(name: name).map(TerminalSafe.escape) }

    /// The API's own explanation (`message` of its JSON error body).
    var message: String { decoded(Wire.Failure.self)?.message ?? "HTTP \(status)" }
}

/// Talks HTTP/1.1 to `keyd.sock` with AsyncHTTPClient (`http+unix://`).
struct DaemonClient {
    let socketPath: String

    /// Tells "not running" and "not allowed on the socket" apart quickly, before a
    /// request could wait for a connection timeout.
    func probe() throws(KeyctlError) {
        let failure = ListeningSockets.probe(path: socketPath)
        guard failure != 0 else { return }
        switch failure {
        case ENOENT:
            throw KeyctlError(exit: .notRunning, message: "recotap-keyd is not running: no socket at \(socketPath) (start it, or pass --socket)")
        case ECONNREFUSED:
            throw KeyctlError(exit: .notRunning, message: "recotap-keyd is not running: nothing answers on \(socketPath)")
        case EACCES, EPERM:
            throw KeyctlError(
                exit: .accessDenied,
                message: "access to \(socketPath) refused by its file permissions (readers need the group recotap-key)")
        default:
            throw KeyctlError(exit: .notRunning, message: "cannot connect to \(socketPath): \(String(cString: strerror(failure)))")
        }
    }

    func request(
        _ method: HTTPMethod, _ uri: String, body: String? = nil, json: Bool = true, timeout: Duration = .seconds(30)
    ) async throws(KeyctlError) -> DaemonResponse {
        try probe()
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: uri) else {
            throw KeyctlError(exit: .failure, message: "cannot build a URL for \(socketPath)")
        }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        if json { request.headers.add(name: "Accept", value: "application/json") }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: TimeAmount(timeout))
            let bytes = try await response.body.collect(upTo: 1 << 20)
            let answer = DaemonResponse(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
            if answer.status == 403 {
                throw KeyctlError(exit: .accessDenied, message: "recotap-keyd refused: \(answer.message)")
            }
            return answer
        } catch let error as KeyctlError {
            throw error
        } catch {
            throw KeyctlError(exit: .notRunning, message: "no answer from recotap-keyd on \(socketPath): \(error)")
        }
    }
}
