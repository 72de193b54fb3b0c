import Foundation

/// The JSON bodies of `keyd.sock` (README "Serving the key"), one `Codable` type each,
/// shared by the daemon (which encodes them) and `recotap-keyctl` (which decodes them).
/// Field names are the properties' in snake case; times are ISO 8601 in UTC. A field
/// marked ``Nullable`` is always present, `null` when unset (a consumer sees every
/// field of the body, set or not); a plain optional is left out when unset.
public enum Wire {
    /// `{"error": code, "message": …}`: `code` is stable, for programs; the message is
    /// for people. Some errors add what they are about.
    public struct Failure: Codable, Sendable, Equatable {
        public var error: String
        public var message: String
        public var version: Int64?
        public var fingerprint: String?
        public var invalidSince: Date?
        public var activeFingerprint: String?
        /// The query parameter an `invalid_parameter` refuses.
        public var parameter: String?
        /// What the API answered when it was asked (a refused re-verification or rollback).
        public var httpStatus: Int?
        public var outcome: String?
        /// When asking again may succeed (`too_soon`).
        public var retryAfterSeconds: Int64?

        public init(error: String, message: String) {
            self.error = error
            self.message = message
        }
    }

    /// `GET /v1/key` with `Accept: application/json`.
    public struct Key: Codable, Sendable, Equatable {
        public var key: String
        public var fingerprint: String
        public var version: Int64
        public var state: String
        /// Whole seconds since the daemon first took the key (`added_at`).
        public var ageSeconds: Int64
        @Nullable public var activatedAt: Date?
        @Nullable public var lastVerifiedAt: Date?
    }

    /// `POST /v1/report`'s body in its JSON form.
    public struct Report: Codable, Sendable, Equatable {
        public var fingerprint: String
    }

    /// `POST /v1/report` accepted.
    public struct ReportAccepted: Codable, Sendable, Equatable {
        public var accepted: Bool
        public var fingerprint: String
        public var message: String
    }

    /// The latest check, as `GET /v1/status` shows it.
    public struct LastCheck: Codable, Sendable, Equatable {
        @Nullable public var at: Date?
        public var outcome: String
        @Nullable public var httpStatus: Int?
        @Nullable public var latencyMs: Int64?
        @Nullable public var reason: String?
    }

    public struct SpoolCounts: Codable, Sendable, Equatable {
        public var directory: String
        public var pending: Int
        public var rejected: Int
    }

    public struct Connections: Codable, Sendable, Equatable {
        public var active: Int
        public var noRole: Int
        public var longPolls: Int
        public var refused: Int
        public var denied: Int
        public var requests: Int
    }

    public struct PeerLogCounts: Codable, Sendable, Equatable {
        public var written: Int
        public var suppressed: Int
    }

    /// `GET /v1/status`.
    public struct Status: Codable, Sendable, Equatable {
        /// `valid`, `unverified`, `invalid`, or `none`.
        public var state: String
        public var healthy: Bool
        @Nullable public var fingerprint: String?
        public var version: Int64
        @Nullable public var source: String?
        /// Whole seconds since the daemon first took the key (`added_at`).
        @Nullable public var ageSeconds: Int64?
        @Nullable public var activatedAt: Date?
        @Nullable public var lastVerifiedAt: Date?
        @Nullable public var invalidSince: Date?
        @Nullable public var lastCheck: LastCheck?
        @Nullable public var nextCheck: Date?
        @Nullable public var degradedSince: Date?
        public var spool: SpoolCounts
        public var connections: Connections
        public var peerLog: PeerLogCounts
        public var uptimeSeconds: Int64
        public var daemonVersion: String
        /// Whether secrets are sealed at rest (README "Sealing the store"); always
        /// set by this daemon (optional so a newer keyctl reads an older daemon).
        public var storeSealed: Bool?
        /// Why the active key is held but not served (sealed without its store key).
        @Nullable public var keyUnavailable: String?
        /// The key source (README "Fleets"); absent when none is configured.
        public var keySource: KeySourceStatus? = nil
    }

    /// The key source in `GET /v1/status`: its program and how its last run ended
    /// (no reason: that is for admins, in the journal and `POST /v1/fetch`).
    public struct KeySourceStatus: Codable, Sendable, Equatable {
        public var program: String
        @Nullable public var lastFetchAt: Date?
        /// `needed`, `admin`, `interval`.
        @Nullable public var lastTrigger: String?
        /// `activated`, `unchanged`, `no_new_key`, `failed`.
        @Nullable public var lastResult: String?
    }

    /// `POST /v1/check`: a check just made (`checked`), or why none was and what is
    /// known instead (a key known invalid; the on-demand budget spent).
    public struct Check: Codable, Sendable, Equatable {
        public var checked: Bool
        @Nullable public var outcome: String?
        @Nullable public var httpStatus: Int?
        @Nullable public var latencyMs: Int64?
        @Nullable public var reason: String?
        @Nullable public var fingerprint: String?
        @Nullable public var state: String?
        /// When the check answering instead of a new one was made.
        @Nullable public var at: Date?
        public var invalidSince: Date?
        public var retryAfterSeconds: Int64?
        public var note: String?
    }

    /// `POST /v1/fetch`: what the key source's run brought.
    public struct Fetch: Codable, Sendable, Equatable {
        /// `activated`, `unchanged`, `no_new_key`, `failed`.
        public var result: String
        @Nullable public var fingerprint: String?
        @Nullable public var version: Int64?
        @Nullable public var state: String?
        public var message: String
    }

    /// `POST /v1/reverify` and `POST /v1/rollback` done: the key that is active again.
    public struct Reinstated: Codable, Sendable, Equatable {
        public var fingerprint: String
        /// A new version, even for the same key: versions only ever grow.
        public var version: Int64
        public var state: String
        /// The key it replaced (the same fingerprint after a re-verification).
        @Nullable public var previousFingerprint: String?
        /// The history entry the key came from.
        public var fromVersion: Int64
        @Nullable public var httpStatus: Int?
        public var latencyMs: Int64
        public var message: String
    }

    /// One key of `GET /v1/history` (never its secret).
    public struct HistoryEntry: Codable, Sendable, Equatable {
        public var version: Int64
        public var fingerprint: String
        public var source: String
        public var status: String
        public var state: String
        public var addedAt: Date
        @Nullable public var activatedAt: Date?
        @Nullable public var retiredAt: Date?
        @Nullable public var retireReason: String?
        @Nullable public var lastVerifiedAt: Date?
        @Nullable public var invalidSince: Date?
        public var secretErased: Bool
    }

    /// `GET /v1/history`.
    public struct History: Codable, Sendable, Equatable {
        public var keys: [HistoryEntry]
    }

    /// One judged spool file of `GET /v1/spool`.
    public struct SpoolVerdict: Codable, Sendable, Equatable {
        public var file: String
        public var at: Date
        /// `activated`, `already_active` or `rejected`.
        public var verdict: String
        @Nullable public var reason: String?
        @Nullable public var fingerprint: String?
    }

    /// `GET /v1/spool`.
    public struct Spool: Codable, Sendable, Equatable {
        public var directory: String
        public var pending: Int
        public var rejected: Int
        /// Newest first.
        public var recent: [SpoolVerdict]
    }
}

/// An optional field written as `null` when unset, instead of left out.
@propertyWrapper
public struct Nullable<Value: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
    public var wrappedValue: Value?

    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        wrappedValue = container.decodeNil() ? nil : try container.decode(Value.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
    }
}

extension KeyedDecodingContainer {
    /// A ``Nullable`` field that is missing decodes as unset, as `null` does.
    public func decode<Value>(_ type: Nullable<Value>.Type, forKey key: Key) throws -> Nullable<Value> {
        try decodeIfPresent(type, forKey: key) ?? Nullable(wrappedValue: nil)
    }
}

/// How ``Wire`` bodies are written and read.
public enum WireJSON {
    /// `value` as one line of JSON with sorted keys. Besides what JSON requires, every
    /// character ``TerminalSafe`` escapes is written as `\u` escapes (DEL, C1 controls,
    /// bidirectional and invisible characters): valid JSON either way, and a file name
    /// or a reason from outside cannot act on a terminal that shows the raw body.
    public static func encode<Value: Encodable>(_ value: Value) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        // The wire types hold strings, numbers, booleans and dates: nothing that fails to encode.
        guard let data = try? encoder.encode(value) else { return "null" }
        return escapingInvisible(String(decoding: data, as: UTF8.self))
    }

    /// Reads a body written by ``encode(_:)``; `nil` when it is not one.
    public static func decode<Value: Decodable>(_ type: Value.Type, from text: String) -> Value? {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(type, from: Data(text.utf8))
    }

    /// Outside strings JSON is ASCII, so every such scalar is inside a string, where
    /// its `\u` escape (a surrogate pair beyond the BMP) means the same character.
    static func escapingInvisible(_ json: String) -> String {
        guard json.unicodeScalars.contains(where: TerminalSafe.isControl) else { return json }
        var out = ""
        out.reserveCapacity(json.utf8.count + 16)
        for scalar in json.unicodeScalars {
            guard TerminalSafe.isControl(scalar) else {
                out.unicodeScalars.append(scalar)
                continue
            }
            for unit in String(scalar).utf16 {
                let hex = String(unit, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            }
        }
        return out
    }
}
