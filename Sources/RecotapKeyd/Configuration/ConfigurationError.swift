/// Why a configuration was refused. Always names the key (or the file) at fault, and
/// for range errors the allowed range, so an operator can fix it without the source.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The configuration key at fault, dotted (`check.jitter`), or `nil` when the
    /// problem is the file as a whole.
    public let key: String?
    /// Where the bad value came from: a file path, an environment variable or a flag.
    public let source: String?
    public let message: String

    public init(key: String?, source: String? = nil, message: String) {
        self.key = key
        self.source = source
        self.message = message
    }

    public var description: String {
        var text = "invalid configuration"
        if let key { text += ": \(key)" }
        if let source { text += " (from \(source))" }
        return text + ": " + message
    }
}
