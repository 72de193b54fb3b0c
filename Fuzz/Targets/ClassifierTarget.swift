import Foundation
import RecotapKeyd

extension FuzzTarget {
    /// An answer from the API as a hostile server or proxy chooses it: status, reason
    /// phrase, headers (`Retry-After` and `Location` included) and body.
    ///
    /// Input: two bytes of status (any 0–65535, reduced to 100–999), then NUL-separated
    /// reason phrase, header lines (`Name: value`, separated by `\n`) and body.
    static let classifier = FuzzTarget(
        name: "classifier", summary: "CheckClassifier: status, headers, body of an API answer"
    ) { bytes throws(FuzzFailure) in
        guard bytes.count >= 2 else { return }
        let status = 100 + (Int(bytes[0]) << 8 | Int(bytes[1])) % 900
        let parts = fields(Array(bytes.dropFirst(2)), limit: 3)
        let reasonPhrase = String(decoding: parts[0], as: UTF8.self)
        let headerText = parts.count > 1 ? String(decoding: parts[1], as: UTF8.self) : ""
        let headers = headerText.split(separator: "\n").map { line -> (String, String) in
            let pair = line.split(separator: ":", maxSplits: 1)
            return (String(pair.first ?? ""), pair.count > 1 ? String(pair[1]) : "")
        }
        let body = parts.count > 2 ? parts[2] : nil
        let cap = Duration.seconds(300)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let result = CheckClassifier.classify(
            status: status, reasonPhrase: reasonPhrase, headers: headers, body: body, latency: .milliseconds(5),
            now: now, retryAfterCap: cap)

        let expected: CheckOutcome = switch status {
        case 200..<300: .valid
        case 401: .invalid
        case 429: .rateLimited
        case 300..<500: .rejectedRequest
        default: .unreachable
        }
        try check(result.outcome == expected, "HTTP \(status) classified \(result.outcome)")
        try check(result.httpStatus == status, "the status is not recorded")
        if let reason = result.reason {
            try check(reason.count <= 200, "a reason of \(reason.count) characters")
            try check(!reason.unicodeScalars.contains { $0.properties.generalCategory == .control }, "a reason with a control character")
        }
        if let wait = result.retryAfter {
            try check(wait >= .zero && wait <= cap, "Retry-After \(wait) outside 0…cap")
        }
        for (name, value) in headers where name.lowercased() == "retry-after" {
            if let wait = CheckClassifier.parseRetryAfter(value, now: now) {
                try check(wait >= .zero, "a negative Retry-After from \(value)")
            }
        }
    }
}
