import Foundation
import Logging
import ServiceLifecycle

/// The daemon, assembled from a validated configuration.
///
/// ``build(configuration:logger:environment:notifier:client:clock:watchdogInterval:random:)``
/// is the one place that wires the components together; the `recotap-keyd`
/// executable and the tests both call it. Everything that can make the start fail —
/// an unusable store, an unsafe spool directory, an unreadable CA file, a bad proxy —
/// fails here, before systemd
/// is told `READY=1`.
public struct KeydDaemon: Sendable {
    public let configuration: KeydConfiguration
    public let store: KeyStore
    public let checker: KeyChecker
    public let intake: SpoolIntake
    public let serviceGroup: ServiceGroup

    /// How often the scheduler's loop comes round at the least (and beats for the
    /// watchdog), whatever the check interval.
    public static let heartbeat: Duration = .seconds(1)

    public static func build(
        configuration: KeydConfiguration,
        logger: Logger,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        notifier: SystemdNotifier = SystemdNotifier(),
        client: (any KeyCheckingClient)? = nil,
        clock: any SchedulerClock = SystemSchedulerClock(),
        watchdogInterval: Duration? = WatchdogService.intervalFromEnvironment(),
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) throws -> KeydDaemon {
        let store = try KeyStore(path: configuration.store.path)
        let spool = try SpoolDirectory(path: configuration.spool.directory)
        let inotify = try InotifyWatch.descriptor(directory: spool.path)
        let watchingSince = Date()
        // The HTTP client is created last of all that can fail: AsyncHTTPClient insists
        // on a shutdown before it goes away, and nothing below throws.
        let apiClient: any KeyCheckingClient
        let closeClient: @Sendable () async -> Void
        if let client {
            apiClient = client
            closeClient = {}
        } else {
            let real = try RecotapAPIClient(
                api: configuration.api, retryAfterCap: configuration.check.backoffMax, environment: environment)
            if let proxy = real.proxyDescription {
                logger.info("API requests go through the proxy \(proxy)")
            }
            apiClient = real
            closeClient = { await real.shutdown() }
        }
        let readiness = Readiness()
        let progress = ProgressMonitor(start: clock.now)
        let checker = KeyChecker(
            store: store, client: apiClient, clock: clock,
            timing: CheckTiming(check: configuration.check, random: random),
            spoolDirectory: configuration.spool.directory, logger: logger, notifier: notifier)

        let intake = SpoolIntake(
            directory: spool, store: store, client: apiClient,
            verifyBeforeActivate: configuration.spool.verifyBeforeActivate, clock: clock, logger: logger,
            onActivated: { await checker.keyActivated() })

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: LifecycleService(
                configuration: configuration, store: store, notifier: notifier, readiness: readiness, logger: logger)),
            .init(service: CheckSchedulerService(
                checker: checker, clock: clock, readiness: readiness, progress: progress, heartbeat: heartbeat,
                onStop: closeClient)),
            .init(service: SpoolService(
                intake: intake, descriptor: inotify, watchingSince: watchingSince, readiness: readiness, logger: logger)),
        ]
        if let watchdogInterval {
            services.append(.init(service: WatchdogService(
                interval: watchdogInterval, window: heartbeat + configuration.api.timeout + .seconds(5),
                clock: clock, notifier: notifier, progress: progress, store: store, readiness: readiness,
                logger: logger)))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        return KeydDaemon(configuration: configuration, store: store, checker: checker, intake: intake, serviceGroup: group)
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    public func run() async throws {
        try await serviceGroup.run()
    }
}
