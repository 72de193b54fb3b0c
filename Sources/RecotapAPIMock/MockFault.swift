/// A fault the mock injects into the next API requests (control calls are never
/// affected). Faults queue up and are used oldest first.
public struct MockFault: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// Answer with `status` (403, 500, 503, …) and the documented error body.
        case status
        /// 429, with `Retry-After: retryAfter` when given (seconds or an HTTP date).
        case rateLimit = "rate_limit"
        /// Wait `delayMilliseconds`, then answer normally (a client timeout shorter than
        /// the delay sees a timeout).
        case delay
        /// Close the connection without an answer.
        case drop
        /// 302 to `location` (default: another host).
        case redirect
        /// 401 whose body has only `"message":"Unauthorized access"`, no `customMessage`,
        /// as the live service has been seen to answer.
        case unauthorizedBare = "unauthorized_bare"
        /// 200 whose body is not JSON: the status still decides.
        case nonJSONSuccess = "non_json_success"
        /// Headers (status `status`, default 200, with a Content-Length of 4 KiB) at
        /// once, then one body byte every `delayMilliseconds` (default 500): a server
        /// that never trips a read timeout yet never finishes.
        case dribbleBody = "dribble_body"
        /// Headers (status `status`, default 200, chunked) at once, then body bytes as
        /// fast as the client reads them, without end.
        case endlessBody = "endless_body"
    }

    public var kind: Kind
    public var status: Int?
    public var retryAfter: String?
    public var delayMilliseconds: Int?
    public var location: String?
    /// How many requests this fault answers; `nil` or 0: every request until cleared.
    public var count: Int?

    public init(
        kind: Kind, status: Int? = nil, retryAfter: String? = nil, delayMilliseconds: Int? = nil,
        location: String? = nil, count: Int? = 1
    ) {
        self.kind = kind
        self.status = status
        self.retryAfter = retryAfter
        self.delayMilliseconds = delayMilliseconds
        self.location = location
        self.count = count
    }

    enum CodingKeys: String, CodingKey {
        case kind, status, count, location
        case retryAfter = "retry_after"
        case delayMilliseconds = "delay_ms"
    }

    public static func status(_ code: Int, count: Int? = 1) -> MockFault { .init(kind: .status, status: code, count: count) }
    public static func rateLimit(retryAfter: String? = nil, count: Int? = 1) -> MockFault {
        .init(kind: .rateLimit, retryAfter: retryAfter, count: count)
    }
    public static func delay(milliseconds: Int, count: Int? = 1) -> MockFault {
        .init(kind: .delay, delayMilliseconds: milliseconds, count: count)
    }
    public static func drop(count: Int? = 1) -> MockFault { .init(kind: .drop, count: count) }
    public static func redirect(to location: String? = nil, count: Int? = 1) -> MockFault {
        .init(kind: .redirect, location: location, count: count)
    }
    public static func unauthorizedBare(count: Int? = 1) -> MockFault { .init(kind: .unauthorizedBare, count: count) }
    public static func nonJSON(count: Int? = 1) -> MockFault { .init(kind: .nonJSONSuccess, count: count) }
    public static func dribbleBody(status: Int = 200, everyMilliseconds interval: Int = 500, count: Int? = 1) -> MockFault {
        .init(kind: .dribbleBody, status: status, delayMilliseconds: interval, count: count)
    }
    public static func endlessBody(status: Int = 200, count: Int? = 1) -> MockFault {
        .init(kind: .endlessBody, status: status, count: count)
    }
}

/// One request the mock received, as recorded for tests to read back. The key itself
/// is never recorded, only its fingerprint (first 12 hex digits of SHA-256).
public struct MockRequest: Sendable, Codable, Equatable {
    public var method: String
    public var path: String
    public var query: String?
    public var apiKeyFingerprint: String?
    public var userAgent: String?
    public var accept: String?
    /// Seconds since 1970.
    public var receivedAt: Double

    enum CodingKeys: String, CodingKey {
        case method, path, query, accept
        case apiKeyFingerprint = "api_key_fingerprint"
        case userAgent = "user_agent"
        case receivedAt = "received_at"
    }
}
