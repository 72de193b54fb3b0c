import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

@testable import RecotapKeyd

private let now = Date(timeIntervalSince1970: 1_800_000_000)

private func classify(_ status: Int, _ phrase: String = "", headers: [(String, String)] = [], body: String? = nil) -> CheckResult {
    CheckClassifier.classify(
        status: status, reasonPhrase: phrase, headers: headers, body: body.map { Array($0.utf8) },
        latency: .milliseconds(42), now: now, retryAfterCap: .seconds(300))
}

private func errorBody(_ fields: [String: Any]) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: fields), as: UTF8.self)
}

@Suite("Classification (README, Checking the key)")
struct CheckClassifierTests {
    @Test("2xx is valid, whatever the body", arguments: [200, 201, 204, 299])
    func success(_ status: Int) {
        let result = classify(status, body: "<html>not json</html>")
        #expect(result.outcome == .valid)
        #expect(result.httpStatus == status)
        #expect(result.reason == nil)
        #expect(result.latency == .milliseconds(42))
    }

    @Test("401 is invalid; the reason is customMessage, else message, else the status line")
    func unauthorized() {
        let full = errorBody(["statusCode": 401, "message": "Unauthorized access", "customMessage": "Invalid API key"])
        #expect(classify(401, "Unauthorized", body: full) == CheckResult(outcome: .invalid, httpStatus: 401, reason: "Invalid API key", latency: .milliseconds(42)))
        #expect(classify(401, "Unauthorized", body: errorBody(["message": "Unauthorized access"])).reason == "Unauthorized access")
        #expect(classify(401, "Unauthorized", body: errorBody(["customMessage": "X-Api-Key header is required"])).reason == "X-Api-Key header is required")
        #expect(classify(401, "Unauthorized").reason == "HTTP 401 Unauthorized")
        #expect(classify(401, "Unauthorized", body: "gateway says no").reason == "HTTP 401 Unauthorized")
        #expect(classify(401, "Unauthorized", body: "gateway says no").outcome == .invalid)
    }

    @Test("403, 400, 404 and other 4xx are rejected_request", arguments: [400, 403, 404, 405, 418, 422])
    func clientErrors(_ status: Int) {
        let result = classify(status, "Whatever", body: errorBody(["statusCode": status, "message": "Forbidden resource"]))
        #expect(result.outcome == .rejectedRequest)
        #expect(result.reason == "Forbidden resource")
        #expect(classify(status, "Whatever").reason == "HTTP \(status) Whatever")
    }

    @Test("3xx is rejected_request and names where it pointed", arguments: [301, 302, 303, 307, 308])
    func redirects(_ status: Int) {
        let result = classify(status, "Found", headers: [("Location", "https://elsewhere.example/x")])
        #expect(result.outcome == .rejectedRequest)
        #expect(result.reason?.contains("redirect to https://elsewhere.example/x not followed") == true)
    }

    @Test("5xx is unreachable", arguments: [500, 502, 503, 504])
    func serverErrors(_ status: Int) {
        let result = classify(status, "Service Unavailable")
        #expect(result.outcome == .unreachable)
        #expect(result.reason == "HTTP \(status) Service Unavailable")
    }

    @Test("429 is rate_limited, with Retry-After as seconds or an HTTP date, capped")
    func rateLimited() {
        let seconds = classify(429, "Too Many Requests", headers: [("Retry-After", "7")])
        #expect(seconds.outcome == .rateLimited)
        #expect(seconds.retryAfter == .seconds(7))
        let date = classify(429, headers: [("retry-after", "Fri, 15 Jan 2027 08:00:30 GMT")])
        #expect(date.retryAfter == .seconds(30))
        #expect(classify(429, headers: [("Retry-After", "86400")]).retryAfter == .seconds(300), "capped at backoff_max")
        #expect(classify(429).retryAfter == nil)
        #expect(classify(429, headers: [("Retry-After", "soon")]).retryAfter == nil)
    }

    @Test("Retry-After parsing")
    func parseRetryAfter() throws {
        #expect(CheckClassifier.parseRetryAfter("7", now: now) == .seconds(7))
        #expect(CheckClassifier.parseRetryAfter(" 0 ", now: now) == .zero)
        // 1_800_000_000 is Fri, 15 Jan 2027 08:00:00 GMT.
        #expect(CheckClassifier.parseRetryAfter("Fri, 15 Jan 2027 08:00:30 GMT", now: now) == .seconds(30))
        #expect(CheckClassifier.parseRetryAfter("Friday, 15-Jan-27 08:01:00 GMT", now: now) == .seconds(60))
        #expect(CheckClassifier.parseRetryAfter("Thu, 01 Jan 2026 00:00:00 GMT", now: now) == .zero, "a past date means now")
        #expect(CheckClassifier.parseRetryAfter("-5", now: now) == nil)
        #expect(CheckClassifier.parseRetryAfter("tomorrow", now: now) == nil)
    }

    @Test("transport failures are unreachable, with the kind of failure as the reason")
    func transportErrors() {
        func reason(_ error: any Error) -> String? {
            let result = CheckClassifier.classify(error: error, latency: .seconds(1), timeout: .seconds(10))
            #expect(result.outcome == .unreachable)
            #expect(result.httpStatus == nil)
            return result.reason
        }
        #expect(reason(HTTPClientError.deadlineExceeded) == "timeout after 10s")
        #expect(reason(HTTPClientError.readTimeout) == "timeout after 10s")
        #expect(reason(HTTPClientError.connectTimeout) == "timeout connecting (after 10s)")
        #expect(reason(HTTPClientError.remoteConnectionClosed) == "connection closed without a response")
        #expect(reason(IOError(errnoCode: ECONNREFUSED, reason: "connect")) == "connection refused")
        #expect(reason(IOError(errnoCode: ECONNRESET, reason: "read")) == "connection reset")
    }

    @Test("reasons are one printable line of at most 200 characters")
    func cleanReasons() {
        let long = String(repeating: "x", count: 500)
        #expect(classify(403, body: errorBody(["message": long])).reason?.count == 200)
        #expect(classify(403, body: errorBody(["message": "a\nb\tc"])).reason == "a b c")
        #expect(classify(400, body: errorBody(["message": ["limit must be an integer", "cursor is invalid"]])).reason
            == "limit must be an integer; cursor is invalid")
    }
}
