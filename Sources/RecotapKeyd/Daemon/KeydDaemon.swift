import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The daemon, assembled from a validated configuration.
///
/// `build(configuration:logger:…)`
/// is the one place that wires the components together; the `recotap-keyd`
/// executable and the tests both call it. It reads nothing of the process itself:
/// the environment, systemd's notification socket, watchdog interval and passed
/// sockets come in as values (the executable's `main` reads them; the defaults are
/// those of a process systemd did not start). `servingLoops` serve the sockets (the
/// executable gives them loops of their own, apart from those running its tasks). Everything that can make the start fail —
/// an unusable store, an unsafe spool directory, an unreadable CA file, a bad proxy —
/// a socket path in use by another daemon — fails here, before systemd is told
/// `READY=1`. Both sockets accept by the time it returns.
public struct KeydDaemon: Sendable {
    public let configuration: KeydConfiguration
    public let store: KeyStore
    public let checker: KeyChecker
    public let intake: SpoolIntake
    public let server: SocketServer
    public let serving: ServingContext
    /// Set when the daemon was built with a way to re-read its configuration (SIGHUP).
    public let reloader: ConfigurationReloader?
    public let serviceGroup: ServiceGroup
    /// The inotify watch, the sockets and the API client, closed after the service
    /// group ends (``run()``).
    let owned: OwnedResources

    /// How long past `api.timeout` the scheduler's loop may take to answer the
    /// watchdog's probe (a round may legitimately take one check).
    public static let watchdogSlack: Duration = .seconds(5)

    public static func build(
        configuration: KeydConfiguration,
        logger: Logger,
        environment: [String: String] = [:],
        notifier: SystemdNotifier = SystemdNotifier { _ in false },
        client: (any KeyCheckingClient)? = nil,
        clock: any SchedulerClock = SystemSchedulerClock(),
        watchdogInterval: Duration? = nil,
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        limits: ServingLimits = .standard,
        inheritedSockets: [ListeningSockets.Inherited] = [],
        servingLoops: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        reload: ConfigurationReloader.Load? = nil
    ) async throws -> KeydDaemon {
        let seal: SecretSeal?
        switch try SecretSeal.load(credentialsDirectory: environment["CREDENTIALS_DIRECTORY"]) {
        case .none: seal = nil
        case .sealed(let found): seal = found
        }
        let store = try KeyStore(path: configuration.store.path, seal: seal)
        logSealing(store.sealReport, path: configuration.store.path, logger: logger)
        let spool = try SpoolDirectory(path: configuration.spool.directory)
        for warning in spool.warnings { logger.warning("\(warning)", metadata: ["spool.directory": .string(spool.path)]) }
        // Each resource is owned from the moment it is open; a later step that fails
        // closes what is open, newest first (``OwnedResources``).
        let owned = OwnedResources()
        let inotifyDescriptor = try InotifyWatch.descriptor(directory: spool.path)
        // NIO owns the descriptor from here, and closes it when it cannot wrap it.
        let inotify = try await InotifyWatch.channel(descriptor: inotifyDescriptor)
        owned.own { try? await inotify.channel.close() }
        let watchingSince = clock.now
        let policy = AccessPolicy(access: configuration.access, metricsReaders: configuration.metrics.readers)
        policy.warnAboutUnresolved(logger)
        let sockets = try await owned.step {
            try ListeningSockets.open(sockets: configuration.sockets, group: policy.socketGroup, inherited: inheritedSockets)
        }
        let socketsHandle = owned.own {
            sockets.api.closeIfBound()
            sockets.credential.closeIfBound()
        }
        for socket in [sockets.api, sockets.credential] {
            if let warning = socket.warning {
                logger.warning("\(socket.path): \(warning)", metadata: ["socket": .string(socket.name)])
            }
            logger.debug(
                "\(socket.name) socket \(socket.origin == .inherited ? "passed by systemd" : "bound") at \(socket.path)")
        }
        let metrics = KeydMetrics(checkInterval: configuration.check.interval)
        let unmetered: any KeyCheckingClient
        if let client {
            unmetered = client
        } else {
            let real = try await owned.step {
                try RecotapAPIClient(
                    api: configuration.api, retryAfterCap: configuration.check.backoffMax, environment: environment,
                    clock: clock)
            }
            // AsyncHTTPClient insists on a shutdown before it goes away.
            owned.own { await real.shutdown() }
            if let proxy = real.proxyDescription {
                logger.info("API requests go through the proxy \(proxy)")
            }
            unmetered = real
        }
        let apiClient = MeteredClient(client: unmetered, metrics: metrics)
        let readiness = Readiness()
        // The checker follows the store's published key (a newly activated key wakes
        // the scheduler's loop through it): no wiring between the spool and the checker.
        let checker = KeyChecker(
            store: store, client: apiClient, clock: clock,
            timing: CheckTiming(check: configuration.check, random: random),
            spoolDirectory: configuration.spool.directory, logger: logger, notifier: notifier, metrics: metrics)
        let progress = ProgressMonitor(start: clock.now, wakeups: checker.wakeups)

        let recovery = KeyRecovery(
            store: store, client: apiClient, clock: clock, minInterval: configuration.check.reportMinInterval,
            logger: logger)
        let intake = SpoolIntake(
            directory: spool, store: store, client: apiClient,
            verifyBeforeActivate: configuration.spool.verifyBeforeActivate, clock: clock, logger: logger,
            recovery: recovery, metrics: metrics)

        let source = configuration.source.command.isEmpty ? nil : KeySource(
            command: KeySourceCommand(
                arguments: configuration.source.command,
                environment: KeySourceCommand.environment(additions: configuration.source.environment, inherited: environment),
                timeout: configuration.source.timeout),
            store: store, intake: intake, clock: clock, logger: logger, metrics: metrics)

        if source != nil {
            for warning in KeySourceCommand.warnings(
                arguments: configuration.source.command, additions: configuration.source.environment, inherited: environment)
            {
                logger.warning("\(warning)")
            }
        }

        let serving = ServingContext(
            store: store, checker: checker, intake: intake, policy: policy, limits: limits, logger: logger,
            clock: clock, recovery: recovery, metrics: metrics, source: source)
        owned.release(socketsHandle)  // the server owns the sockets from its start on, failed or not
        let server = try await owned.step {
            do {
                return try await SocketServer.start(sockets: sockets, context: serving, group: servingLoops)
            } catch {
                throw ServingSetupError(path: configuration.sockets.api, message: "cannot start serving: \(error)")
            }
        }
        owned.own { await server.close() }
        if let address = configuration.metrics.listen {
            let listener = try await owned.step {
                do {
                    return try await MetricsListener.start(address: address, context: serving, group: servingLoops)
                } catch {
                    throw ServingSetupError(
                        path: address.description, message: "cannot listen for metrics (metrics.listen): \(error)")
                }
            }
            owned.own { await listener.close() }
            logger.info("metrics served on http://\(listener.address)/metrics", metadata: ["metrics.listen": .string(listener.address)])
        }

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: LifecycleService(
                configuration: configuration, store: store, notifier: notifier, readiness: readiness, logger: logger,
                clock: clock)),
            .init(service: CheckSchedulerService(
                checker: checker, clock: clock, readiness: readiness, progress: progress,
                stallFile: environment["KEYD_TEST_STALL_FILE"])),
            .init(service: RetentionService(
                store: store, clock: clock, readiness: readiness, logger: logger, published: store.current.changes())),
            .init(service: SpoolService(
                intake: intake, inotify: inotify, watchingSince: watchingSince, readiness: readiness, logger: logger)),
        ]
        if let source {
            services.append(.init(service: KeySourceService(
                source: source, published: store.current.changes(), interval: configuration.source.interval,
                backoffMin: configuration.check.backoffMin, backoffMax: configuration.check.backoffMax,
                jitter: configuration.check.jitter, random: random, clock: clock, readiness: readiness)))
        }
        if let path = configuration.sockets.generationFile {
            services.append(.init(service: GenerationService(
                file: GenerationFile(path: path), published: store.current.changes(), clock: clock, logger: logger)))
        }
        if let path = configuration.metrics.textfile {
            services.append(.init(service: MetricsTextfileService(
                path: path, serving: serving, published: store.current.changes(), logger: logger)))
        }
        services += [
            // Shut down in reverse: the sockets stop accepting before the work
            // requests started is cancelled.
            .init(service: RequestWorkService(work: serving.work)),
            .init(service: ServingService(server: server)),
        ]
        let reloader = reload.map {
            ConfigurationReloader(
                configuration: configuration, load: $0, checker: checker, serving: serving, random: random, logger: logger)
        }
        if let reloader {
            services.append(.init(service: ReloadService(reloader: reloader, notifier: notifier, readiness: readiness)))
        }
        if let watchdogInterval {
            services.append(.init(service: WatchdogService(
                interval: watchdogInterval, window: configuration.api.timeout + watchdogSlack,
                clock: clock, notifier: notifier, progress: progress, store: store,
                eventLoops: EventLoopProbe(loops: Array(servingLoops.makeIterator())),
                readiness: readiness,
                logger: logger, stallLoopFile: environment["KEYD_TEST_STALL_LOOP_FILE"])))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        return KeydDaemon(
            configuration: configuration, store: store, checker: checker, intake: intake, server: server,
            serving: serving, reloader: reloader, serviceGroup: group, owned: owned)
    }

    /// Says once at start how the store keeps its secrets (README "Sealing the store").
    static func logSealing(_ report: SealReport, path: String, logger: Logger) {
        var metadata: Logger.Metadata = ["store.path": .string(path)]
        if let id = report.keyID { metadata["store.key_id"] = .string(id) }
        if report.sealing {
            logger.info("secrets in the store are sealed under store key \(report.keyID ?? "?")", metadata: metadata)
            if report.sealedNow > 0 {
                logger.notice("sealed \(report.sealedNow) secret(s) the store held in the clear", metadata: metadata)
            }
            if report.resealed > 0 {
                logger.notice(
                    "re-sealed \(report.resealed) secret(s) under the new store key; the credential \(SecretSeal.previousCredentialName) is no longer needed",
                    metadata: metadata)
            }
        } else if report.unreadable == 0 {
            logger.notice(
                "the store is not sealed: secrets are kept in the clear in \(path), protected by its file mode only (give a store key as the credential \(SecretSeal.credentialName) to seal them)",
                metadata: metadata)
        }
        if report.unreadable > 0 {
            logger.error(
                "\(report.unreadable) secret(s) in the store are sealed under a store key this daemon was not given: they are not served, and left untouched\(report.sealing ? " (give the old credential as \(SecretSeal.previousCredentialName) to re-seal them)" : "; start recotap-keyd with its credential \(SecretSeal.credentialName)")",
                metadata: metadata)
        }
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully; then, or when a
    /// service fails, closes what the builder opened, newest first.
    public func run() async throws {
        do {
            try await serviceGroup.run()
        } catch {
            await owned.closeAll()
            throw error
        }
        await owned.closeAll()
    }
}
