import Crypto

/// A Recotap External API key.
///
/// The secret is deliberately hard to print: `description`, `debugDescription`,
/// string interpolation, `dump` and `Mirror` all show only the fingerprint (the first
/// 12 hex digits of the SHA-256 of the key). The one way to reach the secret is
/// ``revealSecret()``, whose name makes every use of it stand out in review.
public struct APIKey: Sendable, Hashable {
    private let secret: String

    /// The first 12 hex digits of SHA-256 of the key: the only form of a key that
    /// may appear in logs, errors, status output and the journal.
    public let fingerprint: String

    /// Wraps a secret. No validation happens here; spool intake decides what a
    /// well-formed key is.
    public init(secret: String) {
        self.secret = secret
        self.fingerprint = Self.fingerprint(of: secret)
    }

    /// The secret itself, for the HTTP header, the store and the sockets only.
    public func revealSecret() -> String { secret }

    /// The fingerprint of any key text, without wrapping it.
    public static func fingerprint(of secret: String) -> String {
        let digest = SHA256.hash(data: Array(secret.utf8))
        return digest.prefix(6).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}

extension APIKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "APIKey(\(fingerprint))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["fingerprint": fingerprint], displayStyle: .struct)
    }
}
