import CSystemd

/// Speaks the `sd_notify` protocol to the service manager.
///
/// The production transport is libsystemd's `sd_notify`, a no-op returning 0 when
/// `NOTIFY_SOCKET` is unset (the daemon was not started by systemd). Tests that run
/// the daemon in-process pass their own transport instead of touching the process
/// environment.
public struct SystemdNotifier: Sendable {
    private let transport: @Sendable (String) -> Bool

    /// Notifies the manager named by `NOTIFY_SOCKET`, if any.
    public init() {
        transport = { sd_notify(0, $0) > 0 }
    }

    /// Hands every message to `transport` (which answers whether it was delivered).
    public init(transport: @escaping @Sendable (String) -> Bool) {
        self.transport = transport
    }

    /// Sends newline-separated assignments such as `READY=1\nSTATUS=…`.
    /// Returns whether a message was delivered to a listening manager.
    @discardableResult
    public func notify(_ assignments: String) -> Bool {
        transport(assignments)
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
        String(text.map { $0.isNewline ? " " : $0 })
    }
}
