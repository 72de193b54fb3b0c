import Foundation
import Logging

/// Chooses and builds the log handler for `log.target`.
public enum LoggingSetup {
    public static let identifier = "recotap-keyd"

    /// `auto` means the journal when stderr is connected to it: systemd sets
    /// `JOURNAL_STREAM=<device>:<inode>` for a service whose output goes to the journal,
    /// and a match with stderr's own device and inode proves it (a child process that
    /// merely inherited the variable has a different stderr).
    public static func resolve(
        _ target: KeydConfiguration.LogTarget, environment: [String: String]
    ) -> KeydConfiguration.LogTarget {
        switch target {
        case .journal, .console: return target
        case .auto: return stderrIsJournal(environment: environment) ? .journal : .console
        }
    }

    public static func stderrIsJournal(environment: [String: String]) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    /// Makes the chosen handler the process-wide default, so that loggers created
    /// inside libraries end up in the same place, and returns the daemon's logger.
    /// Call once, from the executable.
    public static func bootstrap(
        target: KeydConfiguration.LogTarget, level: Logger.Level, environment: [String: String]
    ) -> Logger {
        let resolved = resolve(target, environment: environment)
        LoggingSystem.bootstrap { _ in handler(for: resolved, level: level) }
        return Logger(label: identifier)
    }

    /// A logger for the daemon on the chosen target.
    public static func makeLogger(
        target: KeydConfiguration.LogTarget, level: Logger.Level, environment: [String: String]
    ) -> Logger {
        let resolved = resolve(target, environment: environment)
        return Logger(label: identifier) { _ in handler(for: resolved, level: level) }
    }

    private static func handler(for target: KeydConfiguration.LogTarget, level: Logger.Level) -> any LogHandler {
        switch target {
        case .journal: JournalLogHandler(identifier: identifier, level: level)
        case .console, .auto: ConsoleLogHandler(label: identifier, level: level)
        }
    }
}
