/// The outcome of one check of a key against the API (README, "Checking the key"). The raw values
/// are the words used in the store, the journal (`RECOTAP_CHECK_OUTCOME`) and the
/// socket API, so they never change.
public enum CheckOutcome: String, Sendable, Hashable, CaseIterable, Codable {
    /// 2xx: the key works.
    case valid
    /// 401: the key is dead (confirmed by a second request before anyone is told).
    case invalid
    /// 3xx, 400, 403, 404, other 4xx: a configuration or account problem, not the key.
    case rejectedRequest = "rejected_request"
    /// 429.
    case rateLimited = "rate_limited"
    /// 5xx, timeout, DNS, TLS, refused, reset: an outage is never an invalidation.
    case unreachable
}

/// What is known about a key's validity.
public enum KeyState: String, Sendable, Hashable, CaseIterable, Codable {
    case unverified, valid, invalid
}

/// Where a key is in its life: a candidate waiting for a verdict, the one active key,
/// a retired one (replaced), or a rejected candidate.
public enum KeyStatus: String, Sendable, Hashable, CaseIterable, Codable {
    case candidate, active, retired, rejected
}
