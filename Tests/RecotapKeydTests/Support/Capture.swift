import Foundation
import Synchronization

@testable import RecotapKeyd

/// Collects what a log handler writes and what `sd_notify` would send, for tests
/// to inspect.
final class Capture: Sendable {
    private let lines = Mutex<[String]>([])
    private let entries = Mutex<[[JournalField]]>([])
    private let messages = Mutex<[String]>([])

    var notifications: [String] { messages.withLock { $0 } }
    var notifier: SystemdNotifier {
        SystemdNotifier { message in
            self.messages.withLock { $0.append(message) }
            return true
        }
    }

    /// Waits (real time) until a notification holds `assignment`, e.g. `READY=1`.
    func waitForNotification(_ assignment: String, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if notifications.contains(where: { $0.split(separator: "\n").contains(Substring(assignment)) }) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    var consoleLines: [String] { lines.withLock { $0 } }
    var journalEntries: [[JournalField]] { entries.withLock { $0 } }

    var console: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
    var journal: JournalSink { JournalSink { fields in self.entries.withLock { $0.append(fields) } } }

    /// The journal entries of one event (by MESSAGE_ID), as field dictionaries.
    func events(_ event: KeydEvent) -> [[String: String]] {
        journalEntries.map { Dictionary($0.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first }) }
            .filter { $0["MESSAGE_ID"] == event.messageID }
    }

    /// Everything captured, as one text, for "never appears" checks.
    var everything: String {
        (consoleLines + journalEntries.flatMap { $0.map(\.description) }).joined(separator: "\n")
    }
}
