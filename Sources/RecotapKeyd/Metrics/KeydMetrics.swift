import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// The daemon's metrics (README "Monitoring"), recorded through swift-metrics into a
/// swift-prometheus registry of its own and rendered in the Prometheus text format.
///
/// Events are counted where they happen. On the serving path (a key handed out, a
/// refusal) that is one relaxed atomic add — no lock, no allocation, nothing a
/// request's latency can see; a check adds a histogram observation. What describes the present —
/// the served key, its state and times, the long polls — is not pushed at all: it is
/// read from the published key (``CurrentKey``) when the metrics are rendered, so it is
/// never stale and costs nothing between scrapes.
public final class KeydMetrics: Sendable {
    /// The sockets that hand out the key or refuse peers.
    public enum Socket: String, Sendable, CaseIterable {
        case keyd, credential

        var index: Int {
            switch self {
            case .keyd: 0
            case .credential: 1
            }
        }
    }

    /// Rung after every event that changes what the metrics say (a check, a spool
    /// verdict, a new check interval; the textfile's writer rings it for every commit
    /// touching the active key too): the textfile's writer waits on it.
    public let changed = Wakeup()
    private let registry = PrometheusCollectorRegistry()
    private let factory: KeydMetricsFactory
    private let processMetrics = ProcessMetrics()

    private let checks: [CheckOutcome: CoreMetrics.Counter]
    private let checkDuration: CoreMetrics.Timer
    private let invalidations: CoreMetrics.Counter
    private let apiRequests: [String: CoreMetrics.Counter]
    private let spoolVerdicts: [String: CoreMetrics.Counter]
    private let sourceFetches: [String: CoreMetrics.Counter]
    /// By socket, in ``Socket``'s order: an array index on the serving path, no hashing.
    private let served: [CoreMetrics.Counter]
    private let denied: [CoreMetrics.Counter]
    private let keyStates: [ServedState: Meter]
    private let activatedAt: Meter
    private let lastCheckAt: Meter
    private let lastSuccessAt: Meter
    private let checkInterval: Meter
    private let longPolls: Meter
    private let connections: Meter

    private struct State {
        /// The latest check the checker made or loaded, and of which key (version).
        var lastCheck: (keyID: Int64, at: Date)?
        /// The `key_info` series of the key rendered last, and its labels.
        var keyInfo: (labels: [String], meter: Meter)?
    }
    private let state = Mutex(State())
    /// One rendering at a time: the gauges are set, then emitted.
    private let rendering = Mutex(())

    public static let statusClasses = ["2xx", "3xx", "4xx", "5xx", "error"]
    public static let spoolVerdictNames = ["activated", "already_active", "rejected", "left"]
    public static let sourceResultNames = ["activated", "unchanged", "no_new_key", "failed"]

    public init(checkInterval interval: Duration = KeydConfiguration.defaults.check.interval) {
        let factory = KeydMetricsFactory(registry: registry)
        self.factory = factory
        func name(_ short: String) -> String { MetricDefinition.prefix + short }
        // Every labelled series exists from the start (at 0), so rate() and increase()
        // see the first event, and an alert can tell "none yet" from "not exported".
        checks = Dictionary(uniqueKeysWithValues: CheckOutcome.allCases.map {
            ($0, Counter(label: name("checks_total"), dimensions: [("outcome", $0.rawValue)], factory: factory))
        })
        checkDuration = Timer(label: name("check_duration_seconds"), dimensions: [], factory: factory)
        invalidations = Counter(label: name("key_invalidations_total"), dimensions: [], factory: factory)
        apiRequests = Dictionary(uniqueKeysWithValues: Self.statusClasses.map {
            ($0, Counter(label: name("api_requests_total"), dimensions: [("status_class", $0)], factory: factory))
        })
        spoolVerdicts = Dictionary(uniqueKeysWithValues: Self.spoolVerdictNames.map {
            ($0, Counter(label: name("spool_verdicts_total"), dimensions: [("verdict", $0)], factory: factory))
        })
        sourceFetches = Dictionary(uniqueKeysWithValues: Self.sourceResultNames.map {
            ($0, Counter(label: name("source_fetches_total"), dimensions: [("result", $0)], factory: factory))
        })
        served = Socket.allCases.map {
            Counter(label: name("key_served_total"), dimensions: [("socket", $0.rawValue)], factory: factory)
        }
        denied = Socket.allCases.map {
            Counter(label: name("access_denied_total"), dimensions: [("socket", $0.rawValue)], factory: factory)
        }
        keyStates = Dictionary(uniqueKeysWithValues: ServedState.allCases.map {
            ($0, Meter(label: name("key_state"), dimensions: [("state", $0.rawValue)], factory: factory))
        })
        activatedAt = Meter(label: name("key_activated_timestamp_seconds"), dimensions: [], factory: factory)
        lastCheckAt = Meter(label: name("last_check_timestamp_seconds"), dimensions: [], factory: factory)
        lastSuccessAt = Meter(label: name("last_successful_check_timestamp_seconds"), dimensions: [], factory: factory)
        checkInterval = Meter(label: name("check_interval_seconds"), dimensions: [], factory: factory)
        longPolls = Meter(label: name("long_polls"), dimensions: [], factory: factory)
        connections = Meter(label: name("connections"), dimensions: [], factory: factory)
        Meter(label: name("build_info"), dimensions: [("version", KeydVersion.current)], factory: factory).set(1)
        setCheckInterval(interval)
    }

    // MARK: - Events

    /// A check of the active key was answered (or failed): counted by outcome, timed.
    public func checked(_ result: CheckResult, keyID: Int64, at: Date) {
        checks[result.outcome]?.increment()
        checkDuration.recordSeconds(result.latency.seconds)
        noteCheck(keyID: keyID, at: at)
        changed.ring()
    }

    /// The latest check of key `keyID` known (for a key just activated, its
    /// verification, as the store recorded it).
    public func noteCheck(keyID: Int64, at: Date) {
        state.withLock { state in
            if let last = state.lastCheck, last.keyID == keyID, last.at >= at { return }
            state.lastCheck = (keyID, at)
        }
    }

    public func keyInvalidated() { invalidations.increment() }

    /// One request to the API, by the class of its answer.
    public func apiRequest(httpStatus: Int?) {
        let statusClass = httpStatus.flatMap { (200...599).contains($0) ? "\($0 / 100)xx" : nil } ?? "error"
        apiRequests[statusClass]?.increment()
    }

    public func spoolVerdict(_ verdict: String) {
        spoolVerdicts[verdict]?.increment()
        changed.ring()
    }
    /// One run of the key source command, by ``KeySource/Outcome/label``.
    public func sourceFetch(_ result: String) {
        sourceFetches[result]?.increment()
        changed.ring()
    }
    public func served(on socket: Socket) { served[socket.index].increment() }
    public func denied(on socket: Socket) { denied[socket.index].increment() }

    public func setCheckInterval(_ interval: Duration) {
        checkInterval.set(interval.seconds)
        changed.ring()
    }

    // MARK: - Rendering

    /// The Prometheus text exposition (format 0.0.4) of everything, with `current` the
    /// published key. `process`: with the `process_*` metrics (not in the textfile,
    /// where node_exporter's own would collide with them).
    public func render(current: KeyRecord?, longPolls waiting: Int, connections open: Int, process: Bool = true) -> [UInt8] {
        rendering.withLock { _ in
            let served = ServedState(current)
            for (state, meter) in keyStates { meter.set(state == served ? 1 : 0) }
            activatedAt.set(Self.seconds(current?.activatedAt))
            lastSuccessAt.set(Self.seconds(current?.lastVerifiedAt))
            let lastCheck = state.withLock { $0.lastCheck }
            lastCheckAt.set(Self.seconds(lastCheck.flatMap { $0.keyID == current?.id ? $0.at : nil }))
            longPolls.set(Int64(waiting))
            connections.set(Int64(open))
            setKeyInfo(current)
            var buffer: [UInt8] = []
            buffer.reserveCapacity(8192)
            registry.emit(into: &buffer)
            if process { processMetrics.emit(into: &buffer) }
            return buffer
        }
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private func setKeyInfo(_ record: KeyRecord?) {
        let labels = record.map { [$0.fingerprint, String($0.id), $0.sourceKind] }
        state.withLock { state in
            if state.keyInfo?.labels == labels { return }
            state.keyInfo?.meter.destroy()
            state.keyInfo = labels.map { labels in
                let meter = Meter(
                    label: MetricDefinition.prefix + "key_info",
                    dimensions: [("fingerprint", labels[0]), ("version", labels[1]), ("source", labels[2])],
                    factory: factory)
                meter.set(1)
                return (labels, meter)
            }
        }
    }

    static func seconds(_ date: Date?) -> Double { date?.timeIntervalSince1970 ?? 0 }
}
