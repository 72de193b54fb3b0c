import Foundation
import RecotapKeyd

/// The human forms of the daemon's JSON.
enum StatusReport {
    static func date(_ value: JSONValue?) -> Date? {
        value?.string.flatMap { try? Date($0, strategy: .iso8601) }
    }

    static func when(_ value: JSONValue?, now: Date) -> String? {
        guard let date = date(value) else { return nil }
        let stamp = date.formatted(.iso8601).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
        return date <= now
            ? "\(stamp) UTC (\(KeyStatusText.age(from: date, to: now)) ago)"
            : "\(stamp) UTC (in \(KeyStatusText.age(from: now, to: date)))"
    }

    static func render(_ status: JSONValue, now: Date) -> String {
        var lines: [(String, String)] = []
        let state = status["state"]?.string ?? "unknown"
        if state == "none" {
            lines.append(("key", "none yet — drop one into the spool or run recotap-keyctl rotate"))
        } else {
            let fingerprint = status["fingerprint"]?.string ?? "?"
            let version = status["version"]?.int.map(String.init) ?? "?"
            let stateText = switch state {
            case "valid": "valid"
            case "unverified": "not yet verified"
            case "invalid": "INVALID — programs using it are failing; rotate it"
            default: state
            }
            lines.append(("key", "\(fingerprint) (version \(version)): \(stateText)"))
            if let activated = when(status["activated_at"], now: now) {
                lines.append(("activated", activated + (status["source"]?.string.map { ", from \($0)" } ?? "")))
            }
            if let verified = when(status["last_verified_at"], now: now) { lines.append(("verified", verified)) }
            if let invalid = when(status["invalid_since"], now: now) { lines.append(("invalid since", invalid)) }
        }
        if let check = status["last_check"], !check.isNull {
            lines.append(("last check", (when(check["at"], now: now) ?? "?") + ": " + describeCheck(check)))
        } else if state != "none" {
            lines.append(("last check", "none since the daemon started"))
        }
        if let next = when(status["next_check"], now: now) { lines.append(("next check", next)) }
        if let degraded = when(status["degraded_since"], now: now) {
            lines.append(("API", "checks failing since \(degraded); the key stays in use"))
        }
        if let spool = status["spool"] {
            lines.append((
                "spool",
                "\(spool["directory"]?.string ?? "?"): \(spool["pending"]?.int ?? 0) waiting, \(spool["rejected"]?.int ?? 0) in rejected/"
            ))
        }
        if let connections = status["connections"] {
            lines.append((
                "sockets",
                "\(connections["active"]?.int ?? 0) open, \(connections["long_polls"]?.int ?? 0) waiting, \(connections["denied"]?.int ?? 0) refused for access, \(connections["refused"]?.int ?? 0) over the limit"
            ))
        }
        let uptime = status["uptime_seconds"]?.int.map { KeyStatusText.age(from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: TimeInterval($0))) } ?? "?"
        lines.append(("daemon", "recotap-keyd \(status["daemon_version"]?.string ?? "?"), up \(uptime)"))
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }

    /// "valid (HTTP 200, 6 ms)", "unreachable: connection refused".
    static func describeCheck(_ check: JSONValue) -> String {
        let outcome = check["outcome"]?.string ?? "?"
        var details: [String] = []
        if let status = check["http_status"]?.int { details.append("HTTP \(status)") }
        if let latency = check["latency_ms"]?.int { details.append("\(latency) ms") }
        var text = outcome + (details.isEmpty ? "" : " (\(details.joined(separator: ", ")))")
        if let reason = check["reason"]?.string, outcome != "valid" { text += ": \(reason)" }
        if let note = check["note"]?.string { text += "\n(\(note))" }
        return text
    }

    static func historyTable(_ keys: [JSONValue]) -> String {
        let header = ["VERSION", "FINGERPRINT", "STATUS", "STATE", "ACTIVATED", "RETIRED", "SOURCE"]
        let rows = keys.map { key -> [String] in
            [
                key["version"]?.int.map(String.init) ?? "?", key["fingerprint"]?.string ?? "?",
                key["status"]?.string ?? "?", key["state"]?.string ?? "?",
                short(key["activated_at"]), short(key["retired_at"]), key["source"]?.string ?? "",
            ]
        }
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    private static func short(_ value: JSONValue?) -> String {
        guard let text = value?.string else { return "-" }
        return text.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
    }
}
