import CSystemd

/// Speaks the `sd_notify` protocol. Every call is a no-op when `NOTIFY_SOCKET` is
/// unset (the daemon was not started by systemd), which `sd_notify` reports as 0.
public struct SystemdNotifier: Sendable {
    public init() {}

    /// Sends newline-separated assignments such as `READY=1\nSTATUS=…`.
    /// Returns whether a message was sent to a listening manager.
    @discardableResult
    public func notify(_ assignments: String) -> Bool {
        sd_notify(0, assignments) > 0
    }

    @discardableResult
    public func ready(status: String) -> Bool {
        notify("READY=1\nSTATUS=\(Self.oneLine(status))")
    }

    @discardableResult
    public func status(_ status: String) -> Bool {
        notify("STATUS=\(Self.oneLine(status))")
    }

    @discardableResult
    public func stopping(status: String) -> Bool {
        notify("STOPPING=1\nSTATUS=\(Self.oneLine(status))")
    }

    /// A newline would start a new assignment.
    static func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\n", with: " ")
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
