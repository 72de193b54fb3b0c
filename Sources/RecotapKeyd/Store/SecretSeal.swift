import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Seals the secrets the store holds with AES-256-GCM under a key given to the daemon
/// as a systemd credential (README "Sealing the store"), so the database file alone —
/// a backup, a copy, a disk image — holds no usable key.
///
/// The store key is derived (HKDF-SHA256) from the credential's bytes, which
/// `systemd-creds encrypt --with-key=host` (or `tpm2`) keeps encrypted at rest: only
/// this host's systemd can hand them to the daemon. Each secret is sealed with a fresh
/// random nonce and the row's id and the key's fingerprint as associated data, so a
/// sealed secret moved to another row (or given another fingerprint) does not open. It
/// lives in a column of its own, `sealed_secret`. The stored form names the store key that sealed it
/// (`sealed:v1:<key id>:<base64 nonce‖ciphertext‖tag>`), so a secret sealed under
/// another key is told apart from a damaged one.
public struct SecretSeal: Sendable {
    /// The credential's name in `$CREDENTIALS_DIRECTORY`.
    public static let credentialName = "store-key"
    /// The store key being replaced: given too, secrets sealed under it are re-sealed
    /// under ``credentialName`` at start.
    public static let previousCredentialName = "store-key.previous"
    /// Fewer bytes than this in a credential is a mistake (`echo secret | systemd-creds
    /// encrypt …`): refused.
    public static let minimumCredentialBytes = 32
    static let prefix = "sealed:v1:"

    struct StoreKey: Sendable {
        let key: SymmetricKey
        /// 16 hex digits naming the key (not secret: a hash of the derived key).
        let id: String

        init(credential: [UInt8]) {
            key = HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: credential), salt: Array("recotap-keyd store seal".utf8),
                info: Array("v1".utf8), outputByteCount: 32)
            id = key.withUnsafeBytes { bytes in
                SHA256.hash(data: Array("recotap-keyd store key id".utf8) + Array(bytes))
                    .prefix(8).map { String(format: "%02x", $0) }.joined()
            }
        }
    }

    let current: StoreKey
    let previous: StoreKey?

    /// The id of the store key that seals new secrets (in logs and `/v1/status`).
    public var keyID: String { current.id }

    public init(credential: [UInt8], previous: [UInt8]? = nil) {
        current = StoreKey(credential: credential)
        self.previous = previous.map(StoreKey.init(credential:))
    }

    /// Why a stored secret cannot be used.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// Sealed, and the daemon has no store key.
        case noStoreKey(keyID: String)
        /// Sealed under a store key this daemon was not given.
        case otherStoreKey(keyID: String)
        /// Sealed under this store key, but it does not open: damaged, or moved from
        /// another row.
        case damaged
        /// Not in any form this version writes.
        case unknownForm

        public var description: String {
            switch self {
            case .noStoreKey(let id):
                "the secret is sealed (store key \(id)) and recotap-keyd was started without its store key (credential \(SecretSeal.credentialName))"
            case .otherStoreKey(let id):
                "the secret is sealed under another store key (\(id)): this database comes from another host or an earlier credential; give that credential as \(SecretSeal.previousCredentialName) to re-seal it"
            case .damaged:
                "the sealed secret does not open under this store key: it was altered or moved from another row"
            case .unknownForm:
                "the stored secret is in a form this version does not know"
            }
        }
    }

    /// The id of the store key that sealed `stored`.
    static func keyID(of stored: String) -> String? {
        guard stored.hasPrefix(prefix) else { return nil }
        return stored.dropFirst(prefix.count).split(separator: ":", maxSplits: 1).first.map(String.init)
    }

    /// `secret` sealed under the current store key, bound to its row (`id`) and
    /// `fingerprint`.
    package func seal(_ secret: String, id: Int64, fingerprint: String) throws -> String {
        let box = try AES.GCM.seal(
            Array(secret.utf8), using: current.key, authenticating: Self.associatedData(id: id, fingerprint: fingerprint))
        guard let combined = box.combined else { throw Failure.unknownForm }
        return Self.prefix + current.id + ":" + combined.base64EncodedString()
    }

    /// The secret sealed in `stored` (the `sealed_secret` column of row `id`), checked
    /// against `fingerprint`. `seal` is `nil` when the daemon has no store key.
    package static func open(_ stored: String, id: Int64, fingerprint: String, seal: SecretSeal?) -> Result<String, Failure> {
        guard stored.hasPrefix(prefix) else { return .failure(.unknownForm) }
        let parts = stored.dropFirst(prefix.count).split(separator: ":", maxSplits: 1)
        guard parts.count == 2 else { return .failure(.unknownForm) }
        let keyID = String(parts[0])
        guard let seal else { return .failure(.noStoreKey(keyID: keyID)) }
        guard let key = [seal.current, seal.previous].compactMap({ $0 }).first(where: { $0.id == keyID }) else {
            return .failure(.otherStoreKey(keyID: keyID))
        }
        guard let combined = Data(base64Encoded: String(parts[1])),
            let box = try? AES.GCM.SealedBox(combined: combined),
            let plain = try? AES.GCM.open(box, using: key.key, authenticating: associatedData(id: id, fingerprint: fingerprint)),
            let secret = String(bytes: plain, encoding: .utf8),
            APIKey.fingerprint(of: secret) == fingerprint
        else {
            return .failure(.damaged)
        }
        return .success(secret)
    }

    private static func associatedData(id: Int64, fingerprint: String) -> [UInt8] {
        Array("recotap-keyd/v1/key/\(id)/\(fingerprint)".utf8)
    }

    // MARK: - Loading the credential

    /// What was found in `$CREDENTIALS_DIRECTORY`.
    public enum Setup: Sendable {
        /// No store key: secrets are stored in the clear, as without sealing.
        case none
        case sealed(SecretSeal)
    }

    public struct CredentialError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Reads the store key (and the previous one) from `directory`, systemd's
    /// `$CREDENTIALS_DIRECTORY` (`nil`: none, no sealing). A credential that is
    /// there but unusable (too short, unreadable) stops the start: the operator asked
    /// for sealing, and silently storing secrets in the clear would betray that.
    public static func load(credentialsDirectory directory: String?) throws(CredentialError) -> Setup {
        guard let directory, !directory.isEmpty else { return .none }
        guard let current = try read(directory + "/" + credentialName) else {
            if try read(directory + "/" + previousCredentialName) != nil {
                throw CredentialError(description: "credential \(previousCredentialName) was given without \(credentialName): give the new store key as \(credentialName)")
            }
            return .none
        }
        return .sealed(SecretSeal(credential: current, previous: try read(directory + "/" + previousCredentialName)))
    }

    private static func read(_ path: String) throws(CredentialError) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw CredentialError(description: "cannot read the credential \(path): \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= 65_536 {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw CredentialError(description: "cannot read the credential \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes += buffer.prefix(count)
        }
        guard bytes.count >= minimumCredentialBytes else {
            throw CredentialError(
                description: "the credential \(path) holds \(bytes.count) bytes; a store key needs at least \(minimumCredentialBytes) random bytes (head -c 32 /dev/urandom | systemd-creds encrypt …)")
        }
        guard bytes.count <= 65_536 else {
            throw CredentialError(description: "the credential \(path) is larger than 64 KiB: not a store key")
        }
        return bytes
    }
}
