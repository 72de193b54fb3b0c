import Foundation
import RecotapKeyd

/// The human forms of the daemon's JSON.
enum StatusReport {
    static func when(_ date: Date?, now: Date) -> String? {
        guard let date else { return nil }
        let stamp = date.formatted(.iso8601).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
        return date <= now
            ? "\(stamp) UTC (\(KeyStatusText.age(from: date, to: now)) ago)"
            : "\(stamp) UTC (in \(KeyStatusText.age(from: now, to: date)))"
    }

    static func render(_ status: Wire.Status, now: Date) -> String {
        var lines: [(String, String)] = []
        if status.state == "none" {
            lines.append(("key", "none yet — drop one into the spool or run recotap-keyctl rotate"))
        } else {
            let stateText = switch status.state {
            case "valid": "valid"
            case "unverified": "not yet verified"
            case "invalid": "INVALID — programs using it are failing; rotate it"
            default: status.state
            }
            lines.append(("key", "\(status.fingerprint ?? "?") (version \(status.version)): \(stateText)"))
            if let seconds = status.ageSeconds {
                let zero = Date(timeIntervalSince1970: 0)
                lines.append(("age", KeyStatusText.age(from: zero, to: zero.addingTimeInterval(TimeInterval(seconds)))))
            }
            if let activated = when(status.activatedAt, now: now) {
                lines.append(("activated", activated + (status.source.map { ", from \($0)" } ?? "")))
            }
            if let verified = when(status.lastVerifiedAt, now: now) { lines.append(("verified", verified)) }
            if let invalid = when(status.invalidSince, now: now) { lines.append(("invalid since", invalid)) }
            if let why = status.keyUnavailable { lines.append(("NOT SERVED", why)) }
        }
        if let sealed = status.storeSealed {
            lines.append(("store", sealed ? "secrets sealed under the store key" : "secrets in the clear (not sealed)"))
        }
        if let check = status.lastCheck {
            let result = describe(outcome: check.outcome, httpStatus: check.httpStatus, latencyMs: check.latencyMs, reason: check.reason)
            lines.append(("last check", (when(check.at, now: now) ?? "?") + ": " + result))
        } else if status.state != "none" {
            lines.append(("last check", "none since the daemon started"))
        }
        if let next = when(status.nextCheck, now: now) { lines.append(("next check", next)) }
        if let degraded = when(status.degradedSince, now: now) {
            lines.append(("API", "checks failing since \(degraded); the key stays in use"))
        }
        let spool = status.spool
        lines.append(("spool", "\(spool.directory): \(spool.pending) waiting, \(spool.rejected) in rejected/"))
        if let source = status.keySource {
            let last = source.lastResult.map { result in
                "last run \(when(source.lastFetchAt, now: now) ?? "?") (\(source.lastTrigger ?? "?")): \(result.replacingOccurrences(of: "_", with: " "))"
            } ?? "not run since the daemon started"
            lines.append(("key source", "\(source.program), \(last)"))
        }
        let connections = status.connections
        lines.append((
            "sockets",
            "\(connections.active) open, \(connections.longPolls) waiting, \(connections.denied) refused for access, \(connections.refused) over the limit"
        ))
        let uptime = KeyStatusText.age(
            from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: TimeInterval(status.uptimeSeconds)))
        lines.append(("daemon", "recotap-keyd \(status.daemonVersion), up \(uptime)"))
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }

    /// "valid (HTTP 200, 6 ms)", "unreachable: connection refused".
    static func describeCheck(_ check: Wire.Check) -> String {
        var text = describe(outcome: check.outcome ?? "?", httpStatus: check.httpStatus, latencyMs: check.latencyMs, reason: check.reason)
        if let note = check.note { text += "\n(\(note))" }
        return text
    }

    private static func describe(outcome: String, httpStatus: Int?, latencyMs: Int64?, reason: String?) -> String {
        var details: [String] = []
        if let httpStatus { details.append("HTTP \(httpStatus)") }
        if let latencyMs { details.append("\(latencyMs) ms") }
        var text = outcome + (details.isEmpty ? "" : " (\(details.joined(separator: ", ")))")
        if let reason, outcome != "valid" { text += ": \(reason)" }
        return text
    }

    static func historyTable(_ keys: [Wire.HistoryEntry]) -> String {
        let header = ["VERSION", "FINGERPRINT", "STATUS", "STATE", "ACTIVATED", "RETIRED", "SOURCE"]
        let rows = keys.map { key -> [String] in
            [
                String(key.version), key.fingerprint, key.status, key.state,
                short(key.activatedAt), short(key.retiredAt), key.source,
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

    private static func short(_ date: Date?) -> String {
        guard let date else { return "-" }
        return date.formatted(.iso8601).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
    }
}
