import Foundation
import Logging
import ServiceLifecycle

/// The daemon, assembled from a validated configuration.
///
/// ``build(configuration:logger:notifier:clock:)`` is the one place that wires the
/// components together; the `recotap-keyd` executable and the tests both call it.
/// Everything that can make the start fail — an unusable store above all — fails
/// here, before systemd is told `READY=1`.
public struct KeydDaemon: Sendable {
    public let configuration: KeydConfiguration
    public let store: KeyStore
    public let serviceGroup: ServiceGroup

    public static func build(
        configuration: KeydConfiguration,
        logger: Logger,
        notifier: SystemdNotifier = SystemdNotifier()
    ) throws -> KeydDaemon {
        let store = try KeyStore(path: configuration.store.path)
        let lifecycle = LifecycleService(
            configuration: configuration, store: store, notifier: notifier, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: lifecycle)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        return KeydDaemon(configuration: configuration, store: store, serviceGroup: group)
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    public func run() async throws {
        try await serviceGroup.run()
    }
}
