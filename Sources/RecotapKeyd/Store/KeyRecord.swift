import Foundation

/// One key as the store knows it. `key` is `nil` once its secret has been erased, and
/// in every list meant for display (``KeyStore/history(limit:)``).
public struct KeyRecord: Sendable, Equatable {
    /// Also the key's version as served on the sockets: it only ever grows.
    public var id: Int64
    public var fingerprint: String
    public var key: APIKey?
    /// Where the key came from, e.g. the spool file name.
    public var source: String
    public var status: KeyStatus
    public var state: KeyState
    public var addedAt: Date
    public var activatedAt: Date?
    public var retiredAt: Date?
    public var retireReason: String?
    public var lastVerifiedAt: Date?
    public var invalidSince: Date?
    public var secretErasedAt: Date?
    /// Set when the store holds the secret but cannot give it (sealed, without the
    /// store key that opens it): why, for people. `key` is `nil` then.
    public var secretUnavailable: String? = nil
}

/// One check of one key, as recorded.
public struct CheckRecord: Sendable, Equatable {
    public var keyID: Int64
    public var at: Date
    public var outcome: CheckOutcome
    public var httpStatus: Int?
    public var latencyMilliseconds: Int?
    public var reason: String?

    public init(keyID: Int64, at: Date, outcome: CheckOutcome, httpStatus: Int?, latencyMilliseconds: Int?, reason: String?) {
        self.keyID = keyID
        self.at = at
        self.outcome = outcome
        self.httpStatus = httpStatus
        self.latencyMilliseconds = latencyMilliseconds
        self.reason = reason
    }
}

/// The result of one activation: the key now active and the one it replaced.
public struct Activation: Sendable, Equatable {
    public var activated: KeyRecord
    public var retired: KeyRecord?
}

/// How much history the store keeps (README, "The store").
public struct RetentionPolicy: Sendable, Equatable {
    /// Checks older than this are deleted.
    public var checkMaxAge: TimeInterval
    /// At most this many checks are kept in all.
    public var checkMaxCount: Int
    /// A retired key's secret is erased this long after retirement even if the API
    /// never confirmed it invalid.
    public var retiredSecretMaxAge: TimeInterval

    public static let standard = RetentionPolicy(
        checkMaxAge: 30 * 86_400, checkMaxCount: 10_000, retiredSecretMaxAge: 7 * 86_400)
}

/// What the store found of its sealing at open (README "Sealing the store").
public struct SealReport: Sendable, Equatable {
    /// Whether new secrets are sealed (the daemon has a store key).
    public var sealing: Bool
    /// The id of the store key sealing new secrets.
    public var keyID: String?
    /// Secrets that were in the clear and were sealed at this open.
    public var sealedNow = 0
    /// Secrets sealed under the previous store key, re-sealed under the current one.
    public var resealed = 0
    /// Secrets held sealed that this daemon cannot open (no store key, or another one).
    public var unreadable = 0
}

public struct RetentionReport: Sendable, Equatable {
    public var checksDeleted: Int
    public var secretsErased: Int
    /// An erased secret may still be in the WAL: a reader of the database kept the
    /// checkpoint from truncating it (tried again at the next pass).
    public var walPending = false
}

/// The served key's state as the generation file and the metrics name it: the key's
/// ``KeyState``, `none` with no key, `unavailable` when the store holds it sealed
/// without the store key that opens it.
public enum ServedState: String, Sendable, CaseIterable {
    case none, unverified, valid, invalid, unavailable

    public init(_ record: KeyRecord?) {
        guard let record else { self = .none; return }
        guard record.secretUnavailable == nil else { self = .unavailable; return }
        switch record.state {
        case .unverified: self = .unverified
        case .valid: self = .valid
        case .invalid: self = .invalid
        }
    }
}

extension KeyRecord {
    /// Where the key came from, as one of a few words (a metric label): `reverify` and
    /// `rollback` for keys reinstated by an admin, `command` for the key source's,
    /// `spool` for everything else (a spool file, whose name is the record's `source`).
    public var sourceKind: String {
        if source == KeyRecovery.reverifiedSource { return "reverify" }
        if source == KeySource.storeSource { return "command" }
        if source.hasPrefix(KeyRecovery.rollbackSourcePrefix) { return "rollback" }
        return "spool"
    }
}
