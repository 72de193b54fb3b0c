/// What one request to the API said about a key: the outcome of README "Checking the key" and the
/// details the store and the journal record.
public struct CheckResult: Sendable, Equatable {
    public var outcome: CheckOutcome
    /// The HTTP status, when the API answered at all.
    public var httpStatus: Int?
    /// The API's own words (`customMessage`, else `message`), or what went wrong on the
    /// way (timeout, refused, TLS, …). Never the key.
    public var reason: String?
    /// From sending the request to the end of the answer (or the failure).
    public var latency: Duration
    /// For `rate_limited`: how long the API asked to wait, already capped at
    /// `check.backoff_max`; `nil` when it did not say.
    public var retryAfter: Duration?

    public init(outcome: CheckOutcome, httpStatus: Int? = nil, reason: String? = nil, latency: Duration = .zero, retryAfter: Duration? = nil) {
        self.outcome = outcome
        self.httpStatus = httpStatus
        self.reason = reason
        self.latency = latency
        self.retryAfter = retryAfter
    }
}

/// The one call the checker needs from the API. The real client makes exactly one
/// request per call and never retries: the scheduler owns retries. Tests script it.
public protocol KeyCheckingClient: Sendable {
    func check(_ key: APIKey) async -> CheckResult
}

/// Counts every request the daemon makes to the API, by the class of its answer
/// (`recotap_keyd_api_requests_total`), whoever makes it: the checker, the spool's
/// verifications, re-verifications and rollbacks all hold this client.
struct MeteredClient: KeyCheckingClient {
    let client: any KeyCheckingClient
    let metrics: KeydMetrics

    func check(_ key: APIKey) async -> CheckResult {
        let result = await client.check(key)
        metrics.apiRequest(httpStatus: result.httpStatus)
        return result
    }
}
