import Foundation
import Logging
import ServiceLifecycle

/// Tells systemd and the journal where the daemon is in its life: ready once the
/// store is open (and, as they arrive, once every other service is up), the key's
/// status, and stopping on graceful shutdown.
struct LifecycleService: Service, CustomStringConvertible {
    // swift-service-lifecycle logs services by their description; the default one
    // would dump every stored property.
    var description: String { "LifecycleService" }

    let configuration: KeydConfiguration
    let store: KeyStore
    let notifier: SystemdNotifier
    let logger: Logger

    func run() async throws {
        let active = try await store.activeKey()
        let status = KeyStatusText.describe(
            active: active, spoolDirectory: configuration.spool.directory, now: Date())
        logger.event(
            .daemonLifecycle, "recotap-keyd \(KeydVersion.current) started: \(status)",
            metadata: [
                "store.path": .string(configuration.store.path),
                LogKey.keyFingerprint: active.map { .string($0.fingerprint) } ?? .string(""),
            ].filter { if case .string(let value) = $0.value { !value.isEmpty } else { true } })
        if active == nil {
            logger.warning(
                "no API key yet: put one into the spool directory",
                metadata: ["spool.directory": .string(configuration.spool.directory)])
        }
        notifier.ready(status: status)

        // Nothing else to do until shutdown; later services (checking, spool, sockets)
        // run beside this one. Graceful shutdown ends the wait without an error.
        try? await gracefulShutdown()

        notifier.stopping(status: "stopping")
        logger.event(.daemonLifecycle, "recotap-keyd stopping")
        await store.close()
    }
}
