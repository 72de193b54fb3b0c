import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// One complete request on `keyd.sock`.
package struct APIRequest: Sendable {
    package var method: HTTPMethod
    package var path: String
    package var query: [String: String]
    package var headers: HTTPHeaders
    package var body: ByteBuffer

    package init(head: HTTPRequestHead, body: ByteBuffer) {
        method = head.method
        headers = head.headers
        self.body = body
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts.first ?? "")
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                let value = kv.count == 2 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
                query[name] = value
            }
        }
        self.query = query
    }

    var wantsJSON: Bool {
        headers[canonicalForm: "accept"].contains { $0.lowercased().hasPrefix("application/json") }
    }

    /// "GET /v1/key", for logs.
    package var summary: String { "\(method.rawValue) \(path)" }
}

/// One answer on `keyd.sock`.
package struct APIResponse: Sendable {
    package var status: HTTPResponseStatus
    package var headers: HTTPHeaders
    package var body: ByteBuffer?
    /// The complete head (Content-Length included) of a keep-alive HTTP/1.1 answer,
    /// built once per key for `GET /v1/key` (``PreparedKeyAnswers``); `nil` for every
    /// other answer, whose head the transport completes.
    package var preparedHead: HTTPResponseHead?

    init(status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: ByteBuffer? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    static func text(_ status: HTTPResponseStatus, _ text: String, headers: HTTPHeaders = [:]) -> APIResponse {
        var headers = headers
        headers.replaceOrAdd(name: "Content-Type", value: "text/plain; charset=utf-8")
        return APIResponse(status: status, headers: headers, body: ByteBuffer(string: text))
    }

    static func json(_ status: HTTPResponseStatus, _ body: some Encodable, headers: HTTPHeaders = [:]) -> APIResponse {
        var headers = headers
        headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        return APIResponse(status: status, headers: headers, body: ByteBuffer(string: WireJSON.encode(body) + "\n"))
    }

    /// `{"error": code, "message": …}` — `code` is stable, for programs; the message is for people.
    static func error(
        _ status: HTTPResponseStatus, _ code: String, _ message: String, headers: HTTPHeaders = [:],
        adding details: (inout Wire.Failure) -> Void = { _ in }
    ) -> APIResponse {
        var failure = Wire.Failure(error: code, message: message)
        details(&failure)
        return json(status, failure, headers: headers)
    }
}

/// What the transport does with a request.
package enum RouteResult: Sendable {
    case respond(APIResponse)
    /// Work off the event loop (the store, the checker).
    case later(@Sendable () async -> APIResponse)
    /// `GET /v1/key?wait=`: answer when the version differs from `after`, or 304 after `wait`.
    case longPoll(after: Int64, wait: Duration, json: Bool)
}

/// The resources of README "Serving the key" on `keyd.sock`: where each is, the
/// methods it accepts and the least role that may use it. Routing switches over these
/// exhaustively: a new resource cannot be served without a decision on who may use it.
package enum Endpoint: CaseIterable, Sendable {
    case key, report, status, check, history, spool, health, reverify, rollback, fetch, metrics

    package var path: String {
        switch self {
        case .key: "/v1/key"
        case .report: "/v1/report"
        case .status: "/v1/status"
        case .check: "/v1/check"
        case .history: "/v1/history"
        case .spool: "/v1/spool"
        case .health: "/healthz"
        case .reverify: "/v1/reverify"
        case .rollback: "/v1/rollback"
        case .fetch: "/v1/fetch"
        case .metrics: "/metrics"
        }
    }

    package var methods: [HTTPMethod] {
        switch self {
        case .report, .check, .reverify, .rollback, .fetch: [.POST]
        case .key, .status, .history, .spool, .health, .metrics: [.GET]
        }
    }

    /// Who may use it: `/healthz` and `/v1/status` anyone who can connect; `/metrics`
    /// readers, and the peers `metrics.readers` adds (``AccessPolicy/mayReadMetrics(_:)``).
    package var role: AccessRole {
        switch self {
        case .health, .status: .none
        case .key, .report, .metrics: .reader
        case .check, .history, .spool, .reverify, .rollback, .fetch: .admin
        }
    }

    package init?(path: String) {
        guard let found = Self.allCases.first(where: { $0.path == path }) else { return nil }
        self = found
    }
}

/// The requests of README "Serving the key" on `keyd.sock`, independent of the transport.
package struct APIRoutes: Sendable {
    let context: ServingContext

    package init(context: ServingContext) { self.context = context }

    /// `role`: the peer's, decided at accept.
    package func route(_ request: APIRequest, peer: Peer, role: AccessRole) -> RouteResult {
        context.counters.countRequest()
        guard let endpoint = Endpoint(path: request.path) else {
            return .respond(.error(.notFound, "not_found", "no such resource: \(request.path)"))
        }
        guard endpoint.methods.contains(request.method) else {
            let allowed = endpoint.methods.map(\.rawValue).joined(separator: ", ")
            return .respond(.error(
                .methodNotAllowed, "method_not_allowed", "\(request.path) accepts \(allowed)", headers: ["Allow": allowed]))
        }
        guard role >= endpoint.role || (endpoint == .metrics && context.policy.mayReadMetrics(peer)) else {
            let who = endpoint.role == .admin ? "an admin (access.admins)"
                : endpoint == .metrics ? "a reader (access.readers, access.admins or metrics.readers)"
                : "a reader (access.readers or access.admins)"
            let logged = context.denied(peer, on: .keyd, asked: request.summary, needed: who)
            let refusal = APIResponse.error(
                .forbidden, "access_denied", "\(request.summary) is for \(who); uid \(peer.uid) is not one")
            return Self.after(logged, refusal)
        }
        switch endpoint {
        case .health: return .respond(health())
        case .status: return .later { await status() }
        case .key: return key(request)
        case .report: return report(request, peer: peer)
        case .check: return .later { await check() }
        case .history: return history(request)
        case .spool: return .later { await spool() }
        case .reverify: return .later { await recover(.reverify, peer: peer) }
        case .rollback: return .later { await recover(.rollback, peer: peer) }
        case .fetch: return .later { await fetch() }
        case .metrics: return .later { metrics() }
        }
    }

    // MARK: - Metrics

    /// Off the event loops: it reads `/proc/self` for the process metrics.
    private func metrics() -> APIResponse {
        var buffer = ByteBuffer()
        buffer.writeBytes(context.renderMetrics())
        return APIResponse(status: .ok, headers: ["Content-Type": KeydMetrics.contentType], body: buffer)
    }

    // MARK: - Key

    private func key(_ request: APIRequest) -> RouteResult {
        let wait: Duration?
        let after: Int64?
        do {
            wait = try request.seconds("wait", cap: context.limits.maxWait)
            after = try request.integer("after", in: 0...Int64.max)
        } catch {
            return .respond(error.response)
        }
        guard let wait else {
            return .respond(Self.keyResponse(
                context.current.record, request: request, spool: context.intake.directoryPath, prepared: context.keyAnswers,
                now: context.clock.now, metrics: context.metrics))
        }
        return .longPoll(after: after ?? context.current.version, wait: wait, json: request.wantsJSON)
    }

    /// `X-Key-Age`: whole seconds since the daemon first took the key (`added_at`).
    static func keyHeaders(_ record: KeyRecord, now: Date) -> HTTPHeaders {
        [
            "X-Key-Fingerprint": record.fingerprint,
            "X-Key-Version": String(record.id),
            "X-Key-Age": String(KeyStatusText.seconds(from: record.addedAt, to: now)),
            "ETag": etag(record),
            "Cache-Control": "no-store",
        ]
    }

    static func etag(_ record: KeyRecord) -> String { "\"\(record.id)-\(record.fingerprint)\"" }

    static func keyResponse(
        _ record: KeyRecord?, request: APIRequest, spool: String, prepared: PreparedKeyAnswers, now: Date,
        metrics: KeydMetrics? = nil
    ) -> APIResponse {
        guard let record else {
            return .error(
                .notFound, "no_key", "no API key yet: drop one into \(spool) (or use recotap-keyctl rotate)",
                headers: ["X-Key-Version": "0", "Cache-Control": "no-store"]) { $0.version = 0 }
        }
        // Built only off the hot path: the plain answer's head is prepared.
        func headers() -> HTTPHeaders { keyHeaders(record, now: now) }
        if record.state == .invalid {
            let since = record.invalidSince.map { " since \($0.formatted(.iso8601))" } ?? ""
            return .error(
                .serviceUnavailable, "key_invalid",
                "key \(record.fingerprint) was confirmed invalid by the API\(since); waiting for a replacement in \(spool)",
                headers: headers()
            ) {
                $0.fingerprint = record.fingerprint
                $0.version = record.id
                $0.invalidSince = record.invalidSince
            }
        }
        guard let secret = record.key?.revealSecret() else {
            if let why = record.secretUnavailable {
                return .error(.serviceUnavailable, "sealed", "key \(record.fingerprint) is not served: \(why)") {
                    $0.fingerprint = record.fingerprint
                    $0.version = record.id
                }
            }
            return .error(.internalServerError, "no_secret", "the active key's secret is missing from the store")
        }
        if request.headers[canonicalForm: "if-none-match"].contains(where: { $0 == etag(record) || $0 == "*" }) {
            return APIResponse(status: .notModified, headers: headers())
        }
        metrics?.served(on: .keyd)
        if request.wantsJSON {
            let body = Wire.Key(
                key: secret, fingerprint: record.fingerprint, version: record.id, state: record.state.rawValue,
                ageSeconds: KeyStatusText.seconds(from: record.addedAt, to: now),
                activatedAt: record.activatedAt, lastVerifiedAt: record.lastVerifiedAt)
            return .json(.ok, body, headers: headers())
        }
        return prepared.answer(for: record, secret: secret, now: now)
    }

    /// The plain-text answer to `GET /v1/key`: the key's bytes.
    static func plainKey(_ record: KeyRecord, secret: String, now: Date) -> APIResponse {
        var headers = keyHeaders(record, now: now)
        headers.add(name: "Content-Type", value: "text/plain; charset=us-ascii")
        var response = APIResponse(status: .ok, headers: headers, body: ByteBuffer(string: secret))
        headers.add(name: "Content-Length", value: String(secret.utf8.count))
        response.preparedHead = HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
        return response
    }


    /// The answer at a long poll's timeout: nothing changed.
    static func notModified(_ record: KeyRecord?, now: Date) -> APIResponse {
        guard let record else { return APIResponse(status: .notModified, headers: ["X-Key-Version": "0"]) }
        return APIResponse(status: .notModified, headers: keyHeaders(record, now: now))
    }

    // MARK: - Report

    private func report(_ request: APIRequest, peer: Peer) -> RouteResult {
        let text = String(buffer: request.body).trimmingCharacters(in: .whitespacesAndNewlines)
        var fingerprint = text
        if text.hasPrefix("{") {
            guard let body = WireJSON.decode(Wire.Report.self, from: text) else {
                return .respond(.error(.badRequest, "invalid_body", "expected {\"fingerprint\": \"<12 hex digits>\"} or the bare fingerprint"))
            }
            fingerprint = body.fingerprint
        }
        fingerprint = fingerprint.lowercased()
        guard fingerprint.count == 12, fingerprint.allSatisfy(\.isHexDigit) else {
            return .respond(.error(
                .badRequest, "invalid_fingerprint",
                "the body must be the fingerprint of the key that failed (12 hex digits, as in X-Key-Fingerprint)"))
        }
        guard let active = context.current.record, active.fingerprint == fingerprint else {
            let now = context.current.record.map { "; the active key is \($0.fingerprint)" } ?? "; there is no active key"
            return .respond(.error(.conflict, "not_active", "key \(fingerprint) is not the active key\(now): fetch the key again") {
                $0.activeFingerprint = context.current.record?.fingerprint
            })
        }
        let version = active.id
        let logged = context.peerLog.record(.consumerReport, .event(.consumerReported401), peer: peer) { [fingerprint] comm in
            var metadata: Logger.Metadata = [
                LogKey.keyFingerprint: .string(fingerprint), LogKey.keyVersion: .stringConvertible(version),
                LogKey.peerUID: .stringConvertible(peer.uid), LogKey.peerPID: .stringConvertible(peer.pid),
            ]
            if let comm { metadata["peer.comm"] = .string(comm) }
            return (
                "a consumer (uid \(peer.uid), pid \(peer.pid)\(comm.map { ", \($0)" } ?? "")) reports that the API answered 401 for key \(fingerprint); checking it",
                metadata)
        }
        guard context.reportChecks.request(context.checker, on: context.work) != .refused else {
            return .respond(.error(.serviceUnavailable, "shutting_down", "recotap-keyd is shutting down"))
        }
        return Self.after(logged, .json(.accepted, Wire.ReportAccepted(
            accepted: true, fingerprint: fingerprint,
            message: "a check of the key was requested (at most one per check.report_min_interval)")))
    }

    /// `response` once a peer-log entry that names the peer is written (the peer may
    /// exit as soon as it has its answer, and its `comm` with it); at once when none is.
    private static func after(_ logged: EventLoopFuture<Void>?, _ response: APIResponse) -> RouteResult {
        guard let logged else { return .respond(response) }
        return .later {
            try? await logged.get()
            return response
        }
    }

    // MARK: - Health and status

    private func health() -> APIResponse {
        guard let record = context.current.record else {
            return .error(.serviceUnavailable, "no_key", "no key to serve")
        }
        guard record.state != .invalid else {
            return .error(.serviceUnavailable, "key_invalid", "key \(record.fingerprint) is known invalid")
        }
        if let why = record.secretUnavailable {
            return .error(.serviceUnavailable, "sealed", "key \(record.fingerprint) is not served: \(why)")
        }
        return .text(.ok, "ok\n")
    }

    func status() async -> APIResponse {
        let record = context.current.record
        let snapshot = await context.checker.snapshot()
        let counts = context.intake.counts()
        let connections = context.counters.snapshot
        var keySource: Wire.KeySourceStatus?
        if let source = context.source {
            let last = await source.lastOutcome
            keySource = Wire.KeySourceStatus(
                program: TerminalSafe.escape(source.command.arguments.first ?? ""), lastFetchAt: last?.at,
                lastTrigger: last?.trigger.rawValue, lastResult: last?.outcome.label)
        }
        let lastCheck = snapshot.lastCheck.map { check in
            Wire.LastCheck(
                at: check.at, outcome: check.outcome.rawValue, httpStatus: check.httpStatus,
                latencyMs: check.latencyMilliseconds.map(Int64.init), reason: check.reason)
        }
        return .json(.ok, Wire.Status(
            state: record?.state.rawValue ?? "none",
            healthy: record.map { $0.state != .invalid && $0.secretUnavailable == nil } ?? false,
            fingerprint: record?.fingerprint,
            version: record?.id ?? 0,
            source: record?.source,
            ageSeconds: record.map { KeyStatusText.seconds(from: $0.addedAt, to: context.clock.now) },
            activatedAt: record?.activatedAt,
            lastVerifiedAt: record?.lastVerifiedAt,
            invalidSince: record?.invalidSince,
            lastCheck: lastCheck,
            nextCheck: snapshot.nextCheckAt,
            degradedSince: snapshot.degradedSince,
            spool: Wire.SpoolCounts(directory: context.intake.directoryPath, pending: counts.pending, rejected: counts.rejected),
            connections: Wire.Connections(
                active: connections.active, noRole: connections.noRole, longPolls: connections.longPolls,
                refused: connections.refused, denied: connections.denied, requests: connections.requests),
            peerLog: Wire.PeerLogCounts(written: context.peerLog.counts.written, suppressed: context.peerLog.counts.suppressed),
            uptimeSeconds: Saturating.int64(context.clock.now.timeIntervalSince(context.startedAt)) ?? 0,
            daemonVersion: KeydVersion.current,
            storeSealed: context.store.sealReport.sealing,
            keyUnavailable: record?.secretUnavailable, keySource: keySource))
    }

    // MARK: - Admin

    func check() async -> APIResponse {
        switch await context.checker.checkNow(reason: .admin) {
        case .checked(let result):
            let record = context.current.record
            return .json(.ok, Wire.Check(
                checked: true, outcome: result.outcome.rawValue, httpStatus: result.httpStatus,
                latencyMs: Int64(result.latency.milliseconds), reason: result.reason,
                fingerprint: record?.fingerprint, state: record?.state.rawValue))
        case .noCheckableKey where Task.isCancelled:
            // Cancelled by a graceful shutdown while it waited (for a confirmation).
            return .error(.serviceUnavailable, "shutting_down", "recotap-keyd is shutting down")
        case .noCheckableKey(.some(.invalid)):
            let record = context.current.record
            return .json(.ok, Wire.Check(
                checked: false, outcome: CheckOutcome.invalid.rawValue, httpStatus: nil, latencyMs: nil,
                reason: "the key was confirmed invalid before and is not checked again; drop a new key into the spool (or, if the 401 was a mistake on Recotap's side, POST /v1/reverify)",
                fingerprint: record?.fingerprint, state: KeyState.invalid.rawValue, invalidSince: record?.invalidSince))
        case .debounced(let last, let retryIn):
            // The on-demand budget is spent: the latest check answers instead, saying so.
            let record = context.current.record
            let seconds = max(1, retryIn.components.seconds + (retryIn.components.attoseconds > 0 ? 1 : 0))
            return .json(.ok, Wire.Check(
                checked: false, outcome: last?.outcome.rawValue, httpStatus: last?.httpStatus,
                latencyMs: last?.latencyMilliseconds.map(Int64.init), reason: last?.reason,
                fingerprint: record?.fingerprint, state: record?.state.rawValue, at: last?.at, retryAfterSeconds: seconds,
                note: "on-demand checks send at most one request per check.report_min_interval: this is the latest check's result; a follow-up check runs in \(seconds) s"),
                headers: ["Retry-After": String(seconds)])
        case .noCheckableKey:
            return .error(.notFound, "no_key", "no API key to check: drop one into \(context.intake.directoryPath)")
        }
    }

    /// `POST /v1/fetch` (README "Fleets"): runs the key source now, whatever its
    /// backoff, or waits for the run already going; 200 with what it brought, 502 when
    /// it failed.
    func fetch() async -> APIResponse {
        guard let source = context.source else {
            return .error(.conflict, "no_source", "no key source is configured (source.command)")
        }
        // Request work is cancelled only at shutdown: then the fetch stops too.
        let outcome = await withTaskCancellationHandler {
            await source.fetch(.admin)
        } onCancel: {
            source.cancel()
        }
        let record = context.current.record
        switch outcome {
        case .activated(let fingerprint, let state):
            return .json(.ok, Wire.Fetch(
                result: outcome.label, fingerprint: fingerprint, version: record?.fingerprint == fingerprint ? record?.id : nil,
                state: state.rawValue,
                message: "key \(fingerprint) from the key source is now active (\(state == .valid ? "verified" : "not yet verified"))"))
        case .unchanged(let fingerprint):
            return .json(.ok, Wire.Fetch(
                result: outcome.label, fingerprint: fingerprint, version: record?.id, state: record?.state.rawValue,
                message: "the key source returns the active key, \(fingerprint)"))
        case .noNewKey(let reason):
            return .json(.ok, Wire.Fetch(
                result: outcome.label, fingerprint: record?.fingerprint, version: record?.id, state: record?.state.rawValue,
                message: reason))
        case .failed(let reason):
            return .json(.badGateway, Wire.Fetch(
                result: outcome.label, fingerprint: record?.fingerprint, version: record?.id, state: record?.state.rawValue,
                message: reason))
        }
    }

    enum Recovery { case reverify, rollback }

    /// `POST /v1/reverify` and `POST /v1/rollback` (README "Undoing a mistake").
    func recover(_ what: Recovery, peer: Peer) async -> APIResponse {
        guard let recovery = context.recovery else {
            return .error(.serviceUnavailable, "unavailable", "re-verification and rollback are not available in this daemon")
        }
        var metadata: Logger.Metadata = [LogKey.peerUID: .stringConvertible(peer.uid)]
        metadata[LogKey.peerPID] = .stringConvertible(peer.pid)
        if let unit = peer.unit { metadata[LogKey.peerUnit] = .string(unit) }
        let outcome = switch what {
        case .reverify: await recovery.reverifyActive(metadata: metadata)
        case .rollback: await recovery.rollback(metadata: metadata)
        }
        switch outcome {
        case .reinstated(let activation, let from, let result):
            let key = activation.activated
            return .json(.ok, Wire.Reinstated(
                fingerprint: key.fingerprint, version: key.id, state: key.state.rawValue,
                previousFingerprint: activation.retired?.fingerprint, fromVersion: from, httpStatus: result.httpStatus,
                latencyMs: Int64(result.latency.milliseconds),
                message: what == .reverify
                    ? "the API accepts key \(key.fingerprint) again: it is active and valid, as version \(key.id)"
                    : "rolled back to key \(key.fingerprint): the API accepts it; it is active as version \(key.id)"))
        case .refused(let reason, let result):
            let unreachable = result.outcome == .unreachable || result.outcome == .rateLimited
            return .error(
                unreachable ? .serviceUnavailable : .conflict, unreachable ? "api_unavailable" : "refused",
                "\(reason); nothing changed"
            ) { failure in
                failure.httpStatus = result.httpStatus
                failure.outcome = result.outcome.rawValue
            }
        case .tooSoon(let wait):
            let seconds = max(1, Saturating.int64(wait.seconds.rounded(.up)) ?? 1)
            return .error(
                .tooManyRequests, "too_soon",
                "re-verifications and rollbacks ask the API at most once per check.report_min_interval; try again in \(seconds) s",
                headers: ["Retry-After": String(seconds)]
            ) { $0.retryAfterSeconds = seconds }
        case .unavailable(let code, let reason):
            return .error(code == "store_error" ? .internalServerError : .conflict, code, reason)
        }
    }

    private func history(_ request: APIRequest) -> RouteResult {
        let count: Int
        do {
            count = Int(try request.integer("limit", in: 1...1000) ?? 100)
        } catch {
            return .respond(error.response)
        }
        let store = context.store
        return .later {
            do {
                let records = try await store.history(limit: count)
                return .json(.ok, Wire.History(keys: records.map(Self.historyEntry)))
            } catch {
                return .error(.internalServerError, "store_error", "cannot read the history: \(error)")
            }
        }
    }

    static func historyEntry(_ record: KeyRecord) -> Wire.HistoryEntry {
        Wire.HistoryEntry(
            version: record.id, fingerprint: record.fingerprint, source: record.source, status: record.status.rawValue,
            state: record.state.rawValue, addedAt: record.addedAt, activatedAt: record.activatedAt,
            retiredAt: record.retiredAt, retireReason: record.retireReason, lastVerifiedAt: record.lastVerifiedAt,
            invalidSince: record.invalidSince, secretErased: record.secretErasedAt != nil)
    }

    func spool() async -> APIResponse {
        let counts = context.intake.counts()
        let recent = await context.intake.recentVerdicts()
        return .json(.ok, Wire.Spool(
            directory: context.intake.directoryPath, pending: counts.pending, rejected: counts.rejected,
            recent: recent.reversed().map { verdict in
                Wire.SpoolVerdict(
                    file: verdict.file, at: verdict.at, verdict: verdict.verdict, reason: verdict.reason,
                    fingerprint: verdict.fingerprint)
            }))
    }
}


/// The answer to a plain `GET /v1/key` for the active key, built by the first request
/// after the key (or its state) changed — or, for `X-Key-Age`, the first of each second
/// — and shared by all that follow: the hot path builds no headers and no body.
package final class PreparedKeyAnswers: Sendable {
    private struct Entry {
        var id: Int64
        var fingerprint: String
        var state: KeyState
        var age: Int64
        var response: APIResponse
    }
    private let entry = Mutex<Entry?>(nil)

    package init() {}

    func answer(for record: KeyRecord, secret: String, now: Date) -> APIResponse {
        let age = KeyStatusText.seconds(from: record.addedAt, to: now)
        if let cached = entry.withLock({ entry -> APIResponse? in
            guard let entry, entry.id == record.id, entry.state == record.state, entry.fingerprint == record.fingerprint,
                entry.age == age
            else { return nil }
            return entry.response
        }) {
            return cached
        }
        let response = APIRoutes.plainKey(record, secret: secret, now: now)
        entry.withLock {
            $0 = Entry(id: record.id, fingerprint: record.fingerprint, state: record.state, age: age, response: response)
        }
        return response
    }
}
