import NIOHTTP1

/// A query parameter that is present but not acceptable: 400 `invalid_parameter`,
/// naming the parameter and what it accepts.
struct InvalidParameter: Error, Sendable {
    let name: String
    /// What the parameter accepts, e.g. "a whole number from 1 to 1000".
    let expected: String

    var response: APIResponse {
        .error(.badRequest, "invalid_parameter", "\(name) must be \(expected)") { [name] in $0.parameter = name }
    }
}

/// Typed reads of the query string. Every parameter a peer sends passes through one
/// of these: out-of-range values are refused or, where the contract says so, cut to
/// their cap — never converted by a conversion that could trap.
extension APIRequest {
    /// A number of seconds (`5`, `2.5`, `1e3`), 0 or more; above `cap` it is cut to
    /// `cap`. `nil` when absent.
    func seconds(_ name: String, cap: Duration) throws(InvalidParameter) -> Duration? {
        guard let text = query[name] else { return nil }
        let problem = InvalidParameter(
            name: name, expected: "a number of seconds, 0 or more (longer waits are cut to \(cap.components.seconds))")
        guard Self.isDecimalNumber(text), let value = Double(text) else { throw problem }
        // "1e400" parses to infinity: a number, and far above the cap.
        guard value.isFinite else { return cap }
        guard let duration = Saturating.duration(seconds: value) else { throw problem }
        return min(duration, cap)
    }

    /// A whole number in `range`; `nil` when absent.
    func integer(_ name: String, in range: ClosedRange<Int64>) throws(InvalidParameter) -> Int64? {
        guard let text = query[name] else { return nil }
        guard text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-") }),
            let value = Int64(text), range.contains(value)
        else {
            throw InvalidParameter(name: name, expected: "a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// Digits with an optional fraction and exponent: what `Double(_:)` accepts, less
    /// signs, hexadecimal, `inf` and `nan`.
    static func isDecimalNumber(_ text: String) -> Bool {
        var bytes = Substring(text).utf8[...]
        func digits() -> Int {
            let count = bytes.prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }.count
            bytes = bytes.dropFirst(count)
            return count
        }
        var mantissa = digits()
        if bytes.first == UInt8(ascii: ".") {
            bytes = bytes.dropFirst()
            mantissa += digits()
        }
        guard mantissa > 0 else { return false }
        if let e = bytes.first, e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { bytes = bytes.dropFirst() }
            guard digits() > 0 else { return false }
        }
        return bytes.isEmpty
    }
}
