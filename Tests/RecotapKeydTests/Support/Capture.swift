import Foundation
import Synchronization

@testable import RecotapKeyd

/// Collects what a log handler writes, for tests to inspect.
final class Capture: Sendable {
    private let lines = Mutex<[String]>([])
    private let entries = Mutex<[[JournalField]]>([])

    var consoleLines: [String] { lines.withLock { $0 } }
    var journalEntries: [[JournalField]] { entries.withLock { $0 } }

    var console: @Sendable (String) -> Void { { line in self.lines.withLock { $0.append(line) } } }
    var journal: JournalSink { JournalSink { fields in self.entries.withLock { $0.append(fields) } } }

    /// Everything captured, as one text, for "never appears" checks.
    var everything: String {
        (consoleLines + journalEntries.flatMap { $0.map(\.description) }).joined(separator: "\n")
    }
}
