#if canImport(Glibc)
import Glibc
#endif

/// `metrics.listen`: an IP address (no names: nothing to resolve at start) and a port.
public struct MetricsListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var isIPv6: Bool

    /// `127.0.0.1:9851`, `[::1]:9851`; `localhost:9851` is `127.0.0.1:9851`.
    public init?(_ text: String) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
            isIPv6 = true
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            isIPv6 = false
        }
        guard portPart.count <= 5, portPart.allSatisfy({ ("0"..."9").contains($0) }), let port = Int(portPart), (1...65535).contains(port)
        else { return nil }
        var host = String(hostPart)
        if !isIPv6, host == "localhost" { host = "127.0.0.1" }
        var buffer = [UInt8](repeating: 0, count: 16)
        guard inet_pton(isIPv6 ? AF_INET6 : AF_INET, host, &buffer) == 1 else { return nil }
        self.host = host
        self.port = port
    }

    /// 127.0.0.0/8 or ::1.
    public var isLoopback: Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        guard inet_pton(isIPv6 ? AF_INET6 : AF_INET, host, &buffer) == 1 else { return false }
        return isIPv6 ? buffer == [UInt8](repeating: 0, count: 15) + [1] : buffer[0] == 127
    }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
