import Foundation
import Testing

@testable import RecotapKeyd

@Suite("Journal catalog")
struct CatalogTests {
    static let catalogPath = repositoryRoot + "/systemd/recotap-keyd.catalog"

    /// MESSAGE_ID → entry text, parsed as journalctl does (`-- <id>` starts an entry).
    static func entries() throws -> [String: String] {
        let text = try String(contentsOfFile: catalogPath, encoding: .utf8)
        var result: [String: String] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("-- ") {
                current = String(line.dropFirst(3)).trimmingCharacters(in: .whitespaces)
                result[current!] = ""
            } else if let id = current {
                result[id]! += line + "\n"
            }
        }
        return result
    }

    @Test("one entry per MESSAGE_ID of the README's Logging and the journal, each with a subject and what to do")
    func everyEvent() throws {
        let entries = try Self.entries()
        #expect(Set(entries.keys) == Set(KeydEvent.allCases.map(\.messageID)))
        for (id, body) in entries {
            #expect(body.contains("Subject: "), "\(id)")
            #expect(body.contains("Defined-By: recotap-keyd"), "\(id)")
            #expect(body.contains("Fields:"), "\(id) names the fields carrying details")
        }
        let invalidated = try #require(entries[KeydEvent.keyInvalidated.messageID])
        #expect(invalidated.contains("Settings → Workspace →\nTech Settings → API Access Key"))
        #expect(invalidated.contains("spool"))
    }

    static let haveJournalctl = ["/usr/bin/journalctl", "/bin/journalctl"].contains {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    @Test(
        "journalctl accepts it (--update-catalog, --list-catalog) on a copy",
        .enabled(if: haveJournalctl, "journalctl is not installed (Debian package systemd)"))
    func journalctlAcceptsIt() throws {
        let root = try TemporaryDirectory()
        let catalogDirectory = root.path + "/usr/lib/systemd/catalog"
        try FileManager.default.createDirectory(atPath: catalogDirectory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.catalogPath, toPath: catalogDirectory + "/recotap-keyd.catalog")

        func journalctl(_ arguments: [String]) throws -> (Int32, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["journalctl", "--root=\(root.path)"] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        let (updated, updateOutput) = try journalctl(["--update-catalog"])
        #expect(updated == 0, "\(updateOutput)")
        let (listed, listing) = try journalctl(["--list-catalog"])
        #expect(listed == 0)
        for event in KeydEvent.allCases {
            #expect(listing.contains(event.messageID + " recotap-keyd: "), "\(event.rawValue) missing from --list-catalog")
        }
    }
}
