import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// The table of README "Checking the key", as a pure function of the answer. The status code
/// decides; the body only supplies the reason.
public enum CheckClassifier {
    ///
    /// Everything here is chosen by whoever answers — the API, a proxy, an attacker on
    /// the path: the reason that reaches the store and the journal is one printable
    /// line of at most 200 characters, and `Retry-After` saturates at `retryAfterCap`.
    /// `redact` runs on the whole reason before it is cut to length (a server that
    /// echoes the key must not leave a piece of it behind).
    public static func classify(
        status: Int, reasonPhrase: String, headers: [(String, String)], body: [UInt8]?,
        latency: Duration, now: Date, retryAfterCap: Duration, redact: (String) -> String = { $0 }
    ) -> CheckResult {
        var result = outcome(
            status: status, reasonPhrase: reasonPhrase, headers: headers, body: body, latency: latency, now: now,
            retryAfterCap: retryAfterCap)
        result.reason = result.reason.map { clean(redact($0)) }
        return result
    }

    private static func outcome(
        status: Int, reasonPhrase: String, headers: [(String, String)], body: [UInt8]?,
        latency: Duration, now: Date, retryAfterCap: Duration
    ) -> CheckResult {
        let statusLine = "HTTP \(status)" + (reasonPhrase.isEmpty ? "" : " \(reasonPhrase)")
        let apiMessage = body.flatMap(message(fromBody:))
        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name }?.1
        }
        switch status {
        case 200..<300:
            return CheckResult(outcome: .valid, httpStatus: status, latency: latency)
        case 401:
            return CheckResult(outcome: .invalid, httpStatus: status, reason: apiMessage ?? statusLine, latency: latency)
        case 429:
            let retryAfter = header("retry-after").flatMap { parseRetryAfter($0, now: now) }.map { min($0, retryAfterCap) }
            return CheckResult(
                outcome: .rateLimited, httpStatus: status, reason: apiMessage ?? statusLine, latency: latency,
                retryAfter: retryAfter)
        case 300..<400:
            let target = header("location").map { " to \($0)" } ?? ""
            return CheckResult(
                outcome: .rejectedRequest, httpStatus: status,
                reason: "\(statusLine): redirect\(target) not followed (the key is never sent elsewhere)", latency: latency)
        case 400..<500:
            return CheckResult(outcome: .rejectedRequest, httpStatus: status, reason: apiMessage ?? statusLine, latency: latency)
        default:
            let reason = apiMessage.flatMap { $0 == reasonPhrase ? nil : "\(statusLine): \($0)" } ?? statusLine
            return CheckResult(outcome: .unreachable, httpStatus: status, reason: reason, latency: latency)
        }
    }

    /// Any failure to get an answer is `unreachable`; the reason says which kind.
    public static func classify(error: any Error, latency: Duration, timeout: Duration) -> CheckResult {
        CheckResult(outcome: .unreachable, reason: describe(error, timeout: timeout), latency: latency)
    }

    /// The reason for a failed request, in plain words: `timeout after 10s`,
    /// `connection refused`, `DNS lookup failed`, `TLS: …`, `connection reset`.
    static func describe(_ error: any Error, timeout: Duration) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .writeTimeout, .getConnectionFromPoolTimeout:
                return "timeout after \(DurationParsing.format(timeout))"
            case .connectTimeout, .tlsHandshakeTimeout, .httpProxyHandshakeTimeout:
                return "timeout connecting (after \(DurationParsing.format(timeout)))"
            case .remoteConnectionClosed:
                return "connection closed without a response"
            case .proxyAuthenticationRequired, .invalidProxyResponse:
                return "proxy refused the connection (\(error))"
            default:
                return "request failed: \(error)"
            }
        }
        if error is NIOConnectionError {
            let text = "\(error)"
            if text.contains("dnsAError") || text.contains("dnsAAAAError") || text.contains("NXDOMAIN") {
                return "DNS lookup failed"
            }
            if text.contains("Connection refused") || text.contains("ECONNREFUSED") { return "connection refused" }
            return "cannot connect: \(text)"
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return "connection refused"
            case ECONNRESET: return "connection reset"
            case ETIMEDOUT: return "timeout connecting"
            case EHOSTUNREACH, ENETUNREACH: return "network unreachable"
            default: return "network error: \(error)"
            }
        }
        if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError {
            return "TLS: \(error)"
        }
        if error is ChannelError {
            if case ChannelError.connectTimeout = error { return "timeout connecting" }
            return "connection failed: \(error)"
        }
        if error is CancellationError { return "cancelled" }
        let text = "\(error)"
        if text.localizedCaseInsensitiveContains("refused") { return "connection refused" }
        if text.localizedCaseInsensitiveContains("resolve") || text.localizedCaseInsensitiveContains("dns") {
            return "DNS lookup failed"
        }
        return "network error: \(text)"
    }

    /// `customMessage`, else `message` (a string or a list of strings), from an error
    /// body of the documented shape; nil when the body is not such JSON.
    static func message(fromBody body: [UInt8]) -> String? {
        guard !body.isEmpty, let error = try? JSONDecoder().decode(APIErrorBody.self, from: Data(body)) else { return nil }
        return [error.customMessage, error.message].lazy.compactMap { $0 }.first
    }

    /// The fields of the API's error body that explain it; a field of another type
    /// (or empty) counts as absent, never as a failure to read the others.
    private struct APIErrorBody: Decodable {
        var customMessage: String?
        var message: String?

        enum CodingKeys: String, CodingKey { case customMessage, message }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            customMessage = Self.text(container, .customMessage)
            message = Self.text(container, .message)
        }

        /// A string, or a list of strings joined with "; ".
        private static func text(_ container: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) -> String? {
            if let text = try? container.decodeIfPresent(String.self, forKey: key), !text.isEmpty { return text }
            if let list = try? container.decodeIfPresent([String].self, forKey: key), !list.isEmpty {
                return list.joined(separator: "; ")
            }
            return nil
        }
    }

    /// One line, printable, at most 200 characters: it ends up in the journal.
    static func clean(_ text: String) -> String {
        let flat = String(text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : Character($0) })
        return flat.count > 200 ? String(flat.prefix(199)) + "…" : flat
    }

    /// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3); a date in
    /// the past means now. Any number of digits is a delay (saturating: the caller
    /// caps it); anything longer than an HTTP-date is not one.
    public static func parseRetryAfter(_ value: String, now: Date) -> Duration? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        if trimmed.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) {
            return .seconds(Int64(trimmed) ?? .max)
        }
        // Only what the three HTTP-date forms are made of reaches DateFormatter:
        // Foundation's traps on some non-ASCII input (found by the classifier fuzz
        // target: `Fri, 3-\u{73b}… 9999 :5959:59 GMT` ended the process).
        guard trimmed.utf8.count <= 64,
            trimmed.utf8.allSatisfy({ byte in
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                    || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || byte == UInt8(ascii: " ")
                    || byte == UInt8(ascii: ",") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "-")
            })
        else { return nil }
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            if let date = formatter.date(from: trimmed) {
                return Saturating.duration(seconds: max(0, date.timeIntervalSince(now)))
            }
        }
        return nil
    }
}
