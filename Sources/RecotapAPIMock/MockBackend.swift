import Crypto
import Foundation
import Synchronization

/// The mock's state and its decisions, separate from the transport so the rules of
/// README "Checking the key" read in one place.
final class MockBackend: Sendable {
    struct State {
        var validKeys: Set<String> = []
        var faults: [MockFault] = []
        var requests: [MockRequest] = []
        var connections = 0
    }

    /// What the transport should do with a request.
    enum Action {
        case respond(MockResponse, afterMilliseconds: Int)
        case drop
        /// Headers at once, then the body one byte every `everyMilliseconds`.
        case dribble(status: Int, everyMilliseconds: Int)
        /// Headers at once, then a chunked body that never ends.
        case endless(status: Int)
    }

    let state = Mutex(State())

    static var accounts: [[String: Any]] {
        let names = ["Acme Corp", "Globex", "Initech", "Umbrella", "Hooli"]
        let domains = ["acme.com", "globex.com", "initech.com", "umbrella.com", "hooli.com"]
        var result: [[String: Any]] = []
        for index in 0..<names.count {
            var account: [String: Any] = [:]
            account["externalId"] = "crm-00\(index + 1)"
            account["name"] = names[index]
            account["domain"] = domains[index]
            account["rtp_aid"] = "663abc00000000000000000\(index + 1)"
            account["rtp_account_score"] = 50 + index * 7
            account["rtp_journey_stage"] = "Consideration"
            result.append(account)
        }
        return result
    }

    func handle(method: String, uri: String, headers: [(String, String)], body: [UInt8]) -> Action {
        let (path, query) = Self.split(uri)
        if path.hasPrefix("/_mock/") || path == "/_mock" {
            return .respond(control(method: method, path: path, body: body), afterMilliseconds: 0)
        }
        let apiKey = headers.first { $0.0.lowercased() == "x-api-key" }?.1
        let request = MockRequest(
            method: method, path: path, query: query,
            apiKeyFingerprint: apiKey.map(Self.fingerprint),
            userAgent: headers.first { $0.0.lowercased() == "user-agent" }?.1,
            accept: headers.first { $0.0.lowercased() == "accept" }?.1,
            receivedAt: Date().timeIntervalSince1970)
        let (fault, valid) = state.withLock { state -> (MockFault?, Bool) in
            state.requests.append(request)
            var fault: MockFault?
            if !state.faults.isEmpty {
                fault = state.faults[0]
                if let count = state.faults[0].count, count > 0 {
                    if count == 1 { state.faults.removeFirst() } else { state.faults[0].count = count - 1 }
                }
            }
            return (fault, apiKey.map { state.validKeys.contains($0) } ?? false)
        }
        if let fault {
            switch fault.kind {
            case .status:
                let status = fault.status ?? 500
                return .respond(.error(status: status, path: path, message: Self.reasonPhrase(status)), afterMilliseconds: 0)
            case .rateLimit:
                var response = MockResponse.error(status: 429, path: path, message: "Too Many Requests")
                if let retryAfter = fault.retryAfter { response.headers.append(("Retry-After", retryAfter)) }
                return .respond(response, afterMilliseconds: 0)
            case .delay:
                return .respond(api(method: method, path: path, query: query, apiKey: apiKey, valid: valid),
                                afterMilliseconds: fault.delayMilliseconds ?? 1000)
            case .drop:
                return .drop
            case .redirect:
                let location = fault.location ?? "https://elsewhere.example/api/v1/accounts?limit=1"
                return .respond(MockResponse(status: 302, headers: [("Location", location)], body: []), afterMilliseconds: 0)
            case .unauthorizedBare:
                return .respond(.json(status: 401, [
                    "statusCode": 401, "timestamp": Self.timestamp(), "path": path, "message": "Unauthorized access",
                ]), afterMilliseconds: 0)
            case .nonJSONSuccess:
                return .respond(MockResponse(status: 200, headers: [("Content-Type", "text/html")],
                                             body: Array("<html>ok</html>".utf8)), afterMilliseconds: 0)
            case .dribbleBody:
                return .dribble(status: fault.status ?? 200, everyMilliseconds: max(1, fault.delayMilliseconds ?? 500))
            case .endlessBody:
                return .endless(status: fault.status ?? 200)
            }
        }
        return .respond(api(method: method, path: path, query: query, apiKey: apiKey, valid: valid), afterMilliseconds: 0)
    }

    /// The documented API: `GET /api/v1/accounts?limit=N`, authenticated by `X-Api-Key`.
    private func api(method: String, path: String, query: String?, apiKey: String?, valid: Bool) -> MockResponse {
        let normalised = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
        guard normalised == "/api/v1/accounts", method == "GET" else {
            return .error(status: 404, path: path, message: "Cannot \(method) \(path)")
        }
        guard let apiKey, !apiKey.isEmpty else {
            return .unauthorized(path: path, customMessage: "X-Api-Key header is required")
        }
        guard valid else {
            return .unauthorized(path: path, customMessage: "Invalid API key")
        }
        let parameters = Self.parameters(query)
        var limit = 100
        if let text = parameters["limit"] {
            guard let number = Int(text), number >= 1 else {
                return .error(status: 400, path: path, message: "limit must be a positive integer")
            }
            limit = number
        }
        let page = Array(Self.accounts.prefix(limit))
        let hasNext = Self.accounts.count > page.count
        return .json(status: 200, [
            "data": page,
            "nextCursor": hasNext ? (page.last?["rtp_aid"] ?? NSNull()) : NSNull(),
            "hasNextPage": hasNext,
            "syncTimestamp": Self.timestamp(),
        ])
    }

    // MARK: - Control calls

    private func control(method: String, path: String, body: [UInt8]) -> MockResponse {
        let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        switch (method, path) {
        case ("PUT", "/_mock/keys"):
            guard let keys = json["keys"] as? [String] else { return .controlError("body must be {\"keys\": [\"…\"]}") }
            setValidKeys(keys)
            return .json(status: 200, ["valid_keys": keys.count])
        case ("POST", "/_mock/keys"):
            guard let key = json["key"] as? String else { return .controlError("body must be {\"key\": \"…\"}") }
            addValidKey(key)
            return .json(status: 200, ["fingerprint": Self.fingerprint(key)])
        case ("POST", "/_mock/regenerate"):
            let new = regenerate(old: json["old"] as? String, new: json["new"] as? String)
            return .json(status: 200, ["key": new, "fingerprint": Self.fingerprint(new)])
        case ("POST", "/_mock/faults"):
            do {
                let fault = try JSONDecoder().decode(MockFault.self, from: Data(body))
                inject(fault)
                return .json(status: 200, ["queued": state.withLock { $0.faults.count }])
            } catch {
                return .controlError("body must be a fault such as {\"kind\": \"status\", \"status\": 503, \"count\": 1}: \(error)")
            }
        case ("DELETE", "/_mock/faults"):
            clearFaults()
            return .json(status: 200, ["queued": 0])
        case ("GET", "/_mock/requests"):
            let data = (try? JSONEncoder().encode(requests())) ?? Data("[]".utf8)
            return MockResponse(status: 200, headers: [("Content-Type", "application/json")], body: Array(data))
        case ("DELETE", "/_mock/requests"):
            state.withLock { $0.requests.removeAll() }
            return .json(status: 200, ["requests": 0])
        case ("GET", "/_mock/state"):
            let (count, faults) = state.withLock { ($0.validKeys.count, $0.faults.count) }
            return .json(status: 200, ["valid_keys": count, "queued_faults": faults])
        default:
            return .error(status: 404, path: path, message: "unknown control call \(method) \(path)")
        }
    }

    func setValidKeys(_ keys: [String]) { state.withLock { $0.validKeys = Set(keys) } }
    func addValidKey(_ key: String) { _ = state.withLock { $0.validKeys.insert(key) } }

    /// As the web app does: the old key dies at once and a new one is valid. Without
    /// `old`, every key dies (one user, one key).
    func regenerate(old: String?, new: String?) -> String {
        let fresh = new ?? "rtk_" + (0..<32).map { _ in String("abcdefghijklmnopqrstuvwxyz0123456789".randomElement()!) }.joined()
        state.withLock { state in
            if let old { state.validKeys.remove(old) } else { state.validKeys.removeAll() }
            state.validKeys.insert(fresh)
        }
        return fresh
    }

    func connectionOpened() { state.withLock { $0.connections += 1 } }
    var connectionCount: Int { state.withLock { $0.connections } }

    func inject(_ fault: MockFault) { state.withLock { $0.faults.append(fault) } }
    func clearFaults() { state.withLock { $0.faults.removeAll() } }
    func requests() -> [MockRequest] { state.withLock { $0.requests } }

    // MARK: - Helpers

    static func fingerprint(_ key: String) -> String {
        SHA256.hash(data: Array(key.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
    }

    static func split(_ uri: String) -> (String, String?) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, nil) }
        return (String(uri[..<mark]), String(uri[uri.index(after: mark)...]))
    }

    static func parameters(_ query: String?) -> [String: String] {
        var result: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            result[name] = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
        }
        return result
    }

    static func timestamp() -> String {
        Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: "HTTP \(status)"
        }
    }
}

/// An HTTP answer of the mock.
struct MockResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    static func json(status: Int, _ object: [String: Any]) -> MockResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return MockResponse(status: status, headers: [("Content-Type", "application/json; charset=utf-8")], body: Array(data))
    }

    /// The documented error shape: statusCode, timestamp, path, message, customMessage.
    static func error(status: Int, path: String, message: String) -> MockResponse {
        json(status: status, ["statusCode": status, "timestamp": MockBackend.timestamp(), "path": path, "message": message])
    }

    static func unauthorized(path: String, customMessage: String) -> MockResponse {
        json(status: 401, [
            "statusCode": 401, "timestamp": MockBackend.timestamp(), "path": path,
            "message": "Unauthorized access", "customMessage": customMessage,
        ])
    }

    static func controlError(_ message: String) -> MockResponse {
        json(status: 400, ["error": "bad_control_request", "message": message])
    }
}
