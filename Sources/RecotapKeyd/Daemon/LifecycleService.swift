import Foundation
import Logging
import ServiceLifecycle

/// Tells systemd and the journal where the daemon is in its life: ready once the
/// store is open (and, as they arrive, once every other service is up), the key's
/// status, and stopping on graceful shutdown.
struct LifecycleService: Service, CustomStringConvertible {
    let configuration: KeydConfiguration
    let store: KeyStore
    let notifier: SystemdNotifier
    let readiness: Readiness
    let logger: Logger
    let clock: any SchedulerClock

    // swift-service-lifecycle logs services by their description; the default one
    // would dump every stored property.
    var description: String { "LifecycleService" }

    func run() async throws {
        let active = try await store.activeKey()
        let status = KeyStatusText.describe(
            active: active, spoolDirectory: configuration.spool.directory, now: clock.now)
        var metadata: Logger.Metadata = ["store.path": .string(configuration.store.path)]
        if let active {
            metadata[LogKey.keyFingerprint] = .string(active.fingerprint)
            metadata[LogKey.keyVersion] = .stringConvertible(active.id)
        }
        logger.event(.daemonLifecycle, "recotap-keyd \(KeydVersion.current) started: \(status)", metadata: metadata)
        if active == nil {
            logger.warning(
                "no API key yet: put one into the spool directory",
                metadata: ["spool.directory": .string(configuration.spool.directory)])
        }
        notifier.ready(status: status)
        readiness.markReady()

        // Nothing else to do until shutdown; the other services (checking, watchdog)
        // run beside this one. Graceful shutdown ends the wait without an error.
        try? await gracefulShutdown()

        notifier.stopping(status: "stopping")
        logger.event(.daemonLifecycle, "recotap-keyd stopping")
        await store.close()
    }
}
