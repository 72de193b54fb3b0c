import Foundation
import Prometheus
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The `process_*` metrics every Prometheus client exports, read from `/proc/self`
/// when rendered (swift-prometheus does not collect them). A read that fails leaves
/// the value it had.
final class ProcessMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let cpu: Prometheus.Counter
    private let resident: Prometheus.Gauge
    private let virtual: Prometheus.Gauge
    private let openFDs: Prometheus.Gauge
    private let maxFDs: Prometheus.Gauge
    private let startTime: Prometheus.Gauge
    /// CPU seconds already added to the counter.
    private let cpuCounted = Mutex(0.0)

    init() {
        func descriptor(_ name: String) -> MetricNameDescriptor {
            MetricNameDescriptor(
                metricName: name, unitName: "", helpText: MetricDefinition.named(name)?.help ?? "")
        }
        cpu = registry.makeCounter(descriptor: descriptor("process_cpu_seconds_total"))
        resident = registry.makeGauge(descriptor: descriptor("process_resident_memory_bytes"))
        virtual = registry.makeGauge(descriptor: descriptor("process_virtual_memory_bytes"))
        openFDs = registry.makeGauge(descriptor: descriptor("process_open_fds"))
        maxFDs = registry.makeGauge(descriptor: descriptor("process_max_fds"))
        startTime = registry.makeGauge(descriptor: descriptor("process_start_time_seconds"))
        if let stat = Self.stat() {
            startTime.set(to: Self.bootTime() + stat.startTicks / Self.ticks)
        }
    }

    func emit(into buffer: inout [UInt8]) {
        if let stat = Self.stat() {
            let total = (stat.utimeTicks + stat.stimeTicks) / Self.ticks
            let delta = cpuCounted.withLock { counted -> Double in
                defer { counted = max(counted, total) }
                return max(0, total - counted)
            }
            if delta > 0 { cpu.increment(by: delta) }
            resident.set(to: stat.residentPages * Double(sysconf(Int32(_SC_PAGESIZE))))
            virtual.set(to: stat.virtualBytes)
        }
        openFDs.set(to: Double(Self.openDescriptors()))
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {
            maxFDs.set(to: Double(limit.rlim_cur))
        }
        registry.emit(into: &buffer)
    }

    private static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    struct Stat {
        var utimeTicks: Double
        var stimeTicks: Double
        var startTicks: Double
        var virtualBytes: Double
        var residentPages: Double
    }

    /// `/proc/self/stat`: the fields after the command name (which may hold spaces and
    /// parentheses, so the split starts after the last `)`).
    static func stat() -> Stat? {
        guard let text = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // Field 3 (state) is the first after the name: field N is at index N - 3.
        let fields = text[text.index(after: close)...].split(separator: " ")
        func field(_ number: Int) -> Double? {
            let index = number - 3
            return fields.indices.contains(index) ? Double(fields[index]) : nil
        }
        guard let utime = field(14), let stime = field(15), let start = field(22), let vsize = field(23),
            let rss = field(24)
        else { return nil }
        return Stat(utimeTicks: utime, stimeTicks: stime, startTicks: start, virtualBytes: vsize, residentPages: rss)
    }

    /// When the system booted, in seconds since the epoch: the wall clock less the time
    /// since boot (`/proc/stat`'s `btime` would say it, but the unit's `ProcSubset=pid`
    /// hides that file). A process's start time in `/proc/self/stat` counts from boot.
    static func bootTime() -> Double {
        var now = timespec()
        var sinceBoot = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        clock_gettime(CLOCK_BOOTTIME, &sinceBoot)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 - Double(sinceBoot.tv_sec) - Double(sinceBoot.tv_nsec) / 1e9
    }

    static func openDescriptors() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix(2)) }
            if name.first == UInt8(ascii: ".") { continue }
            count += 1
        }
        // The directory's own descriptor is not one of the process's.
        return max(0, count - 1)
    }
}
