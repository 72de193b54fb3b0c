import Foundation
import Testing

@testable import RecotapKeyd

/// Whether this machine can run the native-journal test: it needs root (to make a
/// private mount namespace with its own /run), `unshare` and python3.
private let namespaceSupport: (available: Bool, reason: String) = {
    guard geteuid() == 0 else { return (false, "needs root for a private mount namespace") }
    for tool in ["/usr/bin/unshare", "/usr/bin/python3"] where !FileManager.default.isExecutableFile(atPath: tool) {
        if tool.hasSuffix("python3"), ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":")
            .contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/python3") }) == true
        { continue }
        return (false, "\(tool) not installed")
    }
    return (true, "")
}()

@Suite("Native journal (the real binary and libsystemd)", .serialized)
struct JournalNativeTests {
    /// The daemon's real `sd_journal_sendv` calls, received on
    /// /run/systemd/journal/socket in a private mount namespace (a fresh tmpfs on /run,
    /// never the host's), with the daemon's start and stop driven through a notify socket.
    @Test(
        "sd_journal_sendv entries carry MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_*, MESSAGE_ID and RECOTAP_ fields",
        .enabled(if: namespaceSupport.available, Comment(rawValue: namespaceSupport.reason)))
    func nativeEntries() throws {
        let dir = try TemporaryDirectory()
        let config = try writeTestConfiguration(in: dir)
        let script = repositoryRoot + "/Tests/RecotapKeydTests/Fixtures/journal/capture.py"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = [
            "--mount", "--propagation", "private", "--", "sh", "-c",
            "mount -t tmpfs tmpfs /run && exec python3 \"$0\" \"$1\" \"$2\"",
            script, productsDirectory + "/recotap-keyd", config,
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "capture helper failed")
        let result = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(result["exit"] as? Int == 0, "daemon output: \(result["output"] ?? "")")
        let entries = (result["entries"] as? [[[String]]] ?? []).map { entry in
            Dictionary(entry.map { ($0[0], $0[1]) }, uniquingKeysWith: { first, _ in first })
        }
        let lifecycle = entries.filter { $0["MESSAGE_ID"] == KeydEvent.daemonLifecycle.messageID }
        #expect(lifecycle.count == 2, "started and stopping, got \(entries.count) entries")
        let started = try #require(lifecycle.first)
        #expect(started["MESSAGE"]?.hasPrefix("recotap-keyd \(KeydVersion.current) started: no key yet") == true)
        #expect(started["PRIORITY"] == "6")
        #expect(started["SYSLOG_IDENTIFIER"] == "recotap-keyd")
        #expect(started["CODE_FILE"]?.hasSuffix("LifecycleService.swift") == true)
        #expect(Int(started["CODE_LINE"] ?? "") != nil)
        #expect(started["CODE_FUNC"] == "run()")
        #expect(started["RECOTAP_STORE_PATH"] == dir.path + "/state/keyd.sqlite3")
        #expect(started["RECOTAP_EVENT"] == "DAEMON_LIFECYCLE")
        let warning = try #require(entries.first { $0["MESSAGE"] == "no API key yet: put one into the spool directory" })
        #expect(warning["PRIORITY"] == "4")
        #expect(warning["MESSAGE_ID"] == nil)
        #expect(warning["RECOTAP_SPOOL_DIRECTORY"] == dir.path + "/spool")
        #expect((result["output"] as? String)?.isEmpty == true, "with log.target=journal nothing goes to stderr")
    }
}
