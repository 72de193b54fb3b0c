import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import RecotapKeyd
import RecotapKeyctl
import Synchronization

/// The entry point: before any task exists, Swift concurrency's tasks are put on
/// SwiftNIO's shared event loops instead of libdispatch's worker threads, whose pool
/// monitor wakes the process every second for as long as it lives (README
/// "Performance"). The sockets are served by loops of their own (``RecotapKeydCommand``),
/// so a store write never delays a reader. The command then runs as the one task this
/// bridge starts, while the main thread serves the main queue.
@main
enum RecotapKeydMain {
    static func main() {
        // Installed, recotap-keyctl is a symlink to this binary (README "Install from
        // the Debian package"): called by that name, it is recotap-keyctl, and Swift
        // concurrency stays where recotap-keyctl's own executable has it.
        if let name = CommandLine.arguments.first, (name as NSString).lastPathComponent == "recotap-keyctl" {
            Task {
                await KeyctlCommand.main()
                exit(0)
            }
            dispatchMain()
        }
        let onEventLoops = ConcurrencyOnEventLoops.install()
        RecotapKeydCommand.concurrencyOnEventLoops.withLock { $0 = onEventLoops }
        Task {
            await RecotapKeydCommand.main()
            exit(0)
        }
        dispatchMain()
    }
}

struct RecotapKeydCommand: AsyncParsableCommand {
    /// Whether ``RecotapKeydMain`` put Swift concurrency on the event loops.
    static let concurrencyOnEventLoops = Mutex(false)

    static let configuration = CommandConfiguration(
        commandName: "recotap-keyd",
        abstract: "Keeps a Recotap External API key usable for the programs on this host.",
        discussion: """
            Every configuration key can also be set with RECOTAP_KEYD_<SECTION>_<KEY> in the
            environment or with a flag named after it; flags win over the environment, which
            wins over the file:
            \(ConfigurationKey.all.map { "  \($0.flag) VALUE" }.joined(separator: "\n"))
            """,
        version: KeydVersion.full
    )

    @Option(name: .long, help: "The configuration file (default \(KeydConfiguration.defaultPath)).")
    var config: String?

    @Flag(name: .long, help: "Validate the configuration, print the result and exit.")
    var checkConfig = false

    @Flag(name: .long, help: "Print the manual page recotap-keyd.yaml(5), written from the table of keys, and exit.")
    var configManual = false

    @Argument(parsing: .allUnrecognized, help: .hidden)
    var overrides: [String] = []

    func run() async throws {
        if configManual {
            print(ConfigurationManual.roff(), terminator: "")
            return
        }
        let environment = ProcessInfo.processInfo.environment
        let configuration: KeydConfiguration
        let loader: ConfigurationLoader
        do {
            loader = ConfigurationLoader(
                filePath: config ?? KeydConfiguration.defaultPath,
                fileRequired: config != nil,
                environment: environment,
                flags: try ConfigurationLoader.parseFlags(overrides)
            )
            configuration = try await loader.load()
        } catch {
            printError("recotap-keyd: \(error)")
            throw ExitCode(78)  // EX_CONFIG: systemd need not retry a broken configuration
        }
        if checkConfig {
            let path = config ?? KeydConfiguration.defaultPath
            if config == nil, !FileManager.default.fileExists(atPath: path) {
                print("recotap-keyd: configuration is valid (\(path) not found: defaults and overrides in force)")
            } else {
                print("recotap-keyd: configuration \(path) is valid")
            }
            return
        }

        ProcessHardening.disableCoreDumps()
        ProcessHardening.raiseFileLimit()
        let logger = LoggingSetup.bootstrap(
            target: configuration.log.target, level: configuration.log.level, environment: environment)
        let daemon: KeydDaemon
        do {
            daemon = try await KeydDaemon.build(
                configuration: configuration, logger: logger, environment: environment, notifier: SystemdNotifier(),
                watchdogInterval: WatchdogService.intervalFromEnvironment(),
                inheritedSockets: ListeningSockets.inheritedFromSystemd(),
                servingLoops: MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount), reload: { try await loader.load() })
        } catch {
            logger.critical("cannot start: \(error)")
            // Journal entries are invisible to someone who ran the daemon by hand.
            if LoggingSetup.resolve(configuration.log.target, environment: environment) == .journal,
                !LoggingSetup.stderrIsJournal(environment: environment)
            {
                printError("recotap-keyd: cannot start: \(error)")
            }
            // A proxy, a CA file, a spool directory or a socket path that cannot be
            // used is a configuration error too.
            throw error is APIClientSetupError || error is SpoolSetupError || error is ServingSetupError
                ? ExitCode(78) : ExitCode.failure
        }
        // This runs as a task: with the hook in place, on one of SwiftNIO's loops.
        if Self.concurrencyOnEventLoops.withLock({ $0 }), MultiThreadedEventLoopGroup.currentEventLoop != nil {
            logger.debug("Swift concurrency runs on SwiftNIO's event loops")
        } else {
            logger.debug("Swift concurrency stays on libdispatch (the runtime's global-executor hook was not found, was taken, or is not called)")
        }
        try await daemon.run()
    }

    private func printError(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}
