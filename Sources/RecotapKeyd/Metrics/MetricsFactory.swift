import CoreMetrics
import Prometheus

/// What the daemon exposes (README "Monitoring"): every metric's name, type and help
/// text in one table. The exposition's `# HELP` lines come from here, the README's
/// table is checked against it, and a metric not listed here cannot be made.
public struct MetricDefinition: Sendable, Equatable {
    public enum Kind: String, Sendable { case counter, gauge, histogram }
    public let name: String
    public let kind: Kind
    public let labels: [String]
    public let help: String

    public static let prefix = "recotap_keyd_"

    public static let all: [MetricDefinition] = [
        .init("key_state", .gauge, ["state"],
              "1 for the state of the key the sockets serve (none, unverified, valid, invalid, unavailable), 0 for the others."),
        .init("key_info", .gauge, ["fingerprint", "version", "source"],
              "1, labelled with the served key's fingerprint (never the key), version and where it came from (spool, command, reverify, rollback)."),
        .init("key_activated_timestamp_seconds", .gauge, [],
              "When the served key became active, in seconds since the epoch; 0 with no key."),
        .init("last_check_timestamp_seconds", .gauge, [],
              "When the active key was last checked against the API, whatever the answer; 0 before the first check."),
        .init("last_successful_check_timestamp_seconds", .gauge, [],
              "When the API last accepted the active key (a check or the verification before activation); 0 if never."),
        .init("check_interval_seconds", .gauge, [], "The configured check.interval."),
        .init("checks_total", .counter, ["outcome"],
              "Checks of the active key, by outcome (valid, invalid, rejected_request, rate_limited, unreachable)."),
        .init("check_duration_seconds", .histogram, [],
              "How long the API took to answer a check of the active key (or to fail)."),
        .init("key_invalidations_total", .counter, [],
              "Keys declared invalid: a 401 confirmed by a second request (KEY_INVALIDATED in the journal)."),
        .init("api_requests_total", .counter, ["status_class"],
              "Every request to the Recotap API (checks, confirmations, spool verifications, re-verifications), by the answer's status class (2xx to 5xx; error: no HTTP answer)."),
        .init("spool_verdicts_total", .counter, ["verdict"],
              "Spool files judged, by verdict (activated, already_active, rejected, left)."),
        .init("source_fetches_total", .counter, ["result"],
              "Runs of the key source command, by result (activated, unchanged, no_new_key, failed)."),
        .init("key_served_total", .counter, ["socket"],
              "Times the key was handed out, by socket (keyd: GET /v1/key with a key; credential: credential.sock)."),
        .init("access_denied_total", .counter, ["socket"],
              "Requests refused for lack of access (ACCESS_DENIED in the journal), by socket."),
        .init("long_polls", .gauge, [], "Long polls (GET /v1/key?wait=) waiting for the key to change."),
        .init("connections", .gauge, [], "Connections open on keyd.sock and credential.sock."),
        .init("build_info", .gauge, ["version"], "1, labelled with the daemon's version."),
    ]

    /// The process metrics Prometheus clients conventionally export (not prefixed).
    public static let process: [MetricDefinition] = [
        .init(full: "process_cpu_seconds_total", .counter, "User and system CPU time spent, in seconds."),
        .init(full: "process_resident_memory_bytes", .gauge, "Resident memory size, in bytes."),
        .init(full: "process_virtual_memory_bytes", .gauge, "Virtual memory size, in bytes."),
        .init(full: "process_open_fds", .gauge, "Open file descriptors."),
        .init(full: "process_max_fds", .gauge, "The limit on open file descriptors."),
        .init(full: "process_start_time_seconds", .gauge, "When the process started, in seconds since the epoch."),
    ]

    init(_ name: String, _ kind: Kind, _ labels: [String], _ help: String) {
        self.name = Self.prefix + name
        self.kind = kind
        self.labels = labels
        self.help = help
    }

    init(full name: String, _ kind: Kind, _ help: String) {
        self.name = name
        self.kind = kind
        self.labels = []
        self.help = help
    }

    static func named(_ name: String) -> MetricDefinition? {
        (all + process).first { $0.name == name }
    }
}

/// swift-metrics' factory over one swift-prometheus registry, giving each metric the
/// help text of its ``MetricDefinition`` (the registry requires one help text per name)
/// and the check-duration buckets. The daemon records through swift-metrics' API
/// (`Counter`, `Timer`, `Meter`) with this factory passed explicitly: every daemon
/// has a registry of its own, so tests can run several in one process, and nothing
/// touches the process-wide `MetricsSystem`.
struct KeydMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry

    /// From 10 ms to 30 s: the API answers in tens of milliseconds; `api.timeout` is
    /// 10 s by default.
    static let durationBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        let definition = MetricDefinition.named(label)
        precondition(definition != nil, "metric \(label) is not in MetricDefinition's table")
        return MetricNameDescriptor(metricName: label, unitName: "", helpText: definition?.help ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: Self.durationBuckets)
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
