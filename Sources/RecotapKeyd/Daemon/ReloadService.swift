import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// SIGHUP (`systemctl reload`, `ExecReload=`) re-reads the configuration. What can
/// change in a running daemon changes at once — `check.*` (the schedule), `access.*`
/// and `metrics.readers` (names resolved anew) —; anything else that differs is logged as taking
/// effect at the next restart. A configuration that does not load or validate is
/// refused with the reason, and the daemon keeps running on the one it has.
public final class ConfigurationReloader: Sendable {
    public typealias Load = @Sendable () async throws -> KeydConfiguration

    private let load: Load
    private let current: Mutex<KeydConfiguration>
    private let checker: KeyChecker
    private let serving: ServingContext
    private let random: @Sendable () -> Double
    private let logger: Logger

    init(
        configuration: KeydConfiguration, load: @escaping Load, checker: KeyChecker, serving: ServingContext,
        random: @escaping @Sendable () -> Double, logger: Logger
    ) {
        self.load = load
        self.current = Mutex(configuration)
        self.checker = checker
        self.serving = serving
        self.random = random
        self.logger = logger
    }

    public var configuration: KeydConfiguration { current.withLock { $0 } }

    /// Reloads once; returns whether the new configuration is in force.
    @discardableResult
    public func reload() async -> Bool {
        let new: KeydConfiguration
        do {
            new = try await load()
        } catch {
            logger.error("reload refused, the running configuration stays: \(error)")
            return false
        }
        let old = configuration
        var applied: [String] = []
        if new.check != old.check {
            await checker.reconfigure(CheckTiming(check: new.check, random: random))
            await serving.recovery?.reconfigure(minInterval: new.check.reportMinInterval)
            serving.metrics.setCheckInterval(new.check.interval)
            applied.append("check")
        }
        // Resolved anew even when the names are the same: a group or user may have been
        // re-created with another id. (Membership is what the kernel reports for each
        // connection, not the group database: see AccessPolicy.)
        let policy = AccessPolicy(access: new.access, metricsReaders: new.metrics.readers)
        policy.warnAboutUnresolved(logger)
        serving.replacePolicy(policy)
        if new.access != old.access { applied.append("access") }
        if new.metrics.readers != old.metrics.readers { applied.append("metrics.readers") }
        var metricsOutputs = new.metrics
        metricsOutputs.readers = old.metrics.readers
        let pending = [
            ("api", new.api != old.api), ("spool", new.spool != old.spool), ("store", new.store != old.store),
            ("sockets", new.sockets != old.sockets), ("log", new.log != old.log),
            ("metrics.listen/textfile", metricsOutputs != old.metrics), ("source", new.source != old.source),
        ].filter(\.1).map(\.0)
        var kept = new
        kept.api = old.api
        kept.spool = old.spool
        kept.store = old.store
        kept.sockets = old.sockets
        kept.log = old.log
        kept.metrics = old.metrics
        kept.metrics.readers = new.metrics.readers
        kept.source = old.source
        current.withLock { $0 = kept }
        if !pending.isEmpty {
            logger.warning(
                "configuration reloaded; changes to \(pending.joined(separator: ", ")) take effect at the next restart",
                metadata: ["reload.pending": .string(pending.joined(separator: ","))])
        }
        logger.notice(
            "configuration reloaded\(applied.isEmpty ? " (nothing to change now)" : ": \(applied.joined(separator: ", ")) in force")",
            metadata: ["check.interval": .string(DurationParsing.format(new.check.interval))])
        return true
    }
}

/// Runs ``ConfigurationReloader/reload()`` on every SIGHUP, telling systemd
/// `RELOADING=1` before and `READY=1` after.
struct ReloadService: Service, CustomStringConvertible {
    let reloader: ConfigurationReloader
    let notifier: SystemdNotifier
    let readiness: Readiness
    var description: String { "ReloadService" }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        try await runUntilGracefulShutdown(after: readiness) {
            for await _ in signals {
                var now = timespec()
                clock_gettime(CLOCK_MONOTONIC, &now)
                let microseconds = Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
                _ = notifier.notify("RELOADING=1\nMONOTONIC_USEC=\(microseconds)")
                await reloader.reload()
                _ = notifier.notify("READY=1")
            }
        }
    }
}
