import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// Why the API client could not be set up (a start-up error).
public struct APIClientSetupError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// The real API client: `GET {api.base_url}/accounts?limit=1` on AsyncHTTPClient.
///
/// One `HTTPClient` lives as long as the daemon, so checks reuse its connection pool.
/// Redirects are never followed (the key is never sent to another host), and every
/// call makes exactly one request. The whole exchange — connect, TLS, headers and body
/// — ends within `api.timeout`, and at most ``maxBodyBytes`` of the body are read:
/// AsyncHTTPClient's deadline covers only the response head, so a server that
/// dribbles its body would otherwise hold a check (and the scheduler) for hours.
public final class RecotapAPIClient: KeyCheckingClient {
    private let http: HTTPClient
    private let url: String
    private let timeout: Duration
    private let retryAfterCap: Duration
    /// The wall clock an HTTP-date `Retry-After` is measured against.
    private let clock: any SchedulerClock
    /// The proxy in use, as `host:port`, for the start-up log line; nil for none.
    public let proxyDescription: String?

    public static var userAgent: String { "recotap-keyd/\(KeydVersion.current)" }

    public init(
        api: KeydConfiguration.API, retryAfterCap: Duration, environment: [String: String],
        clock: any SchedulerClock = SystemSchedulerClock()
    ) throws {
        self.clock = clock
        guard let baseURL = URLComponents(string: api.baseURL), let host = baseURL.host else {
            throw APIClientSetupError(message: "api.base_url \(api.baseURL) is not a URL")
        }
        url = api.baseURL + "/accounts?limit=1"
        timeout = api.timeout
        self.retryAfterCap = retryAfterCap

        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile = api.caFile {
            do {
                tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caFile))]
            } catch {
                throw APIClientSetupError(message: "api.ca_file \(caFile): cannot load PEM certificates: \(error)")
            }
        }
        let proxy = try Self.proxy(api: api, scheme: baseURL.scheme ?? "https", host: host, environment: environment)
        proxyDescription = proxy.map { "\($0.host):\($0.port)" }

        let amount = TimeAmount.milliseconds(api.timeout.milliseconds)
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: amount, read: amount),
            proxy: proxy.map { .server(host: $0.host, port: $0.port, authorization: $0.authorization) }
        )
        configuration.decompression = .disabled
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func check(_ key: APIKey) async -> CheckResult {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        request.headers.add(name: "X-Api-Key", value: key.revealSecret())
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: Self.userAgent)
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + timeout
        do {
            let response = try await http.execute(request, timeout: TimeAmount(timeout))
            // The body only supplies the reason; a body that cannot be read in time or
            // in size (too large, cut off, still arriving at the deadline) leaves the
            // status to decide on its own.
            let body = await Self.collect(response.body, upTo: Self.maxBodyBytes, until: deadline)
            let latency = clock.now - start
            return CheckClassifier.classify(
                status: Int(response.status.code), reasonPhrase: response.status.reasonPhrase,
                headers: response.headers.map { ($0.name, $0.value) },
                body: body.map { Array($0.readableBytesView) }, latency: latency, now: self.clock.now,
                retryAfterCap: retryAfterCap, redact: { Self.redact($0, key: key) })
        } catch {
            let result = CheckClassifier.classify(error: error, latency: clock.now - start, timeout: timeout)
            return CheckResult(
                outcome: result.outcome, httpStatus: result.httpStatus,
                reason: result.reason.map { Self.redact($0, key: key) }, latency: result.latency)
        }
    }

    /// The most of an answer's body that is read (the documented error body is a few
    /// hundred bytes).
    static let maxBodyBytes = 64 * 1024

    /// The body, or `nil` if it is larger than `limit` or has not ended by `deadline`
    /// (the read is then cancelled, which closes the connection).
    static func collect(
        _ body: HTTPClientResponse.Body, upTo limit: Int, until deadline: ContinuousClock.Instant
    ) async -> ByteBuffer? {
        await withTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try? await body.collect(upTo: limit) }
            group.addTask {
                try? await SystemSchedulerClock.sleep(for: deadline - .now)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Closes the connection pool.
    public func shutdown() async {
        try? await http.shutdown()
    }

    /// A server that echoes the header back must not get the key into the journal.
    static func redact(_ text: String, key: APIKey) -> String {
        let secret = key.revealSecret()
        guard !secret.isEmpty, text.contains(secret) else { return text }
        return text.replacingOccurrences(of: secret, with: "<key \(key.fingerprint)>")
    }

    struct ProxySettings {
        var host: String
        var port: Int
        var authorization: HTTPClient.Authorization?
    }

    /// `api.proxy`, else `https_proxy`/`HTTPS_PROXY` (for an https API) or
    /// `http_proxy` (for plain http), unless `no_proxy`/`NO_PROXY` names the host.
    /// Loopback hosts never go through a proxy.
    static func proxy(
        api: KeydConfiguration.API, scheme: String, host: String, environment: [String: String]
    ) throws -> ProxySettings? {
        if ConfigurationValidator.isLoopback(host) { return nil }
        let fromEnvironment: (name: String, value: String)? = {
            let names = scheme == "https" ? ["https_proxy", "HTTPS_PROXY"] : ["http_proxy"]
            for name in names { if let value = environment[name], !value.isEmpty { return (name, value) } }
            return nil
        }()
        let source: (name: String, value: String)
        if let configured = api.proxy {
            source = ("api.proxy", configured)
        } else if let fromEnvironment {
            let noProxy = environment["no_proxy"] ?? environment["NO_PROXY"] ?? ""
            for entry in noProxy.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) {
                let suffix = entry.hasPrefix(".") ? entry : "." + entry
                if entry == "*" || host.lowercased() == entry || host.lowercased().hasSuffix(suffix) { return nil }
            }
            source = fromEnvironment
        } else {
            return nil
        }
        let text = source.value.contains("://") ? source.value : "http://" + source.value
        guard let url = URLComponents(string: text), let proxyHost = url.host, !proxyHost.isEmpty,
            url.scheme?.lowercased() == "http", (1...65535).contains(url.port ?? 80)
        else {
            throw APIClientSetupError(
                message: "\(source.name) is not an http:// proxy URL such as http://proxy.example:3128 (TLS to the proxy itself is not supported)")
        }
        var authorization: HTTPClient.Authorization?
        if let user = url.user {
            authorization = .basic(username: user.removingPercentEncoding ?? user, password: (url.password ?? "").removingPercentEncoding ?? "")
        }
        return ProxySettings(host: proxyHost, port: url.port ?? 80, authorization: authorization)
    }
}
