import Foundation
import Logging
import RecotapKeyd

/// What the serving targets share, built once per process: a real store in a scratch
/// directory with one active key, the checker over an API that always answers 200 (no
/// network), an empty spool, and an access policy with one reader (uid 4242, by
/// number). Logs go nowhere: the targets check answers, not log lines.
package final class ServingFixture: Sendable {
    package static let shared = ServingFixture()

    package static let key = APIKey(secret: "rtk_fuzz_fixture_key_0123456789")
    /// The three kinds of peer the targets connect as.
    package static let peers: [Peer] = [
        Peer(pid: 0, uid: 0, gid: 0),  // root: an admin
        Peer(pid: 0, uid: 4242, gid: 4242),  // a reader by uid
        Peer(pid: 0, uid: 65534, gid: 65534),  // nobody: no role
    ]

    package let context: ServingContext
    let directory: String

    private init() {
        directory = FileManager.default.temporaryDirectory.path + "/recotap-keyd-fuzz-serving-\(getpid())"
        try? FileManager.default.createDirectory(atPath: directory + "/spool", withIntermediateDirectories: true)
        let logger = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
        let directory = self.directory
        context = blocking { () -> ServingContext in
            do {
                let store = try KeyStore(path: directory + "/state/keyd.sqlite3")
                if try await store.activeKey() == nil {
                    _ = try await store.addAndActivate(ServingFixture.key, source: "fuzz", state: .valid, at: Date())
                }
                let clock = SystemSchedulerClock()
                let client = AlwaysValid()
                var check = KeydConfiguration.defaults.check
                check.reportMinInterval = .seconds(3600)
                let checker = KeyChecker(
                    store: store, client: client, clock: clock, timing: CheckTiming(check: check),
                    spoolDirectory: directory + "/spool", logger: logger, notifier: SystemdNotifier { _ in false })
                let intake = SpoolIntake(
                    directory: try SpoolDirectory(path: directory + "/spool"), store: store, client: client,
                    verifyBeforeActivate: true, clock: clock, logger: logger)
                var access = KeydConfiguration.defaults.access
                access.readers.users = ["4242"]
                access.readers.groups = []
                access.admins.groups = []
                let context = ServingContext(
                    store: store, checker: checker, intake: intake, policy: AccessPolicy(access: access, ownUID: 0),
                    limits: .standard, logger: logger)
                // What the daemon's RequestWorkService does, for the fixture's lifetime (the process's).
                Task.detached { await context.work.run() }
                return context
            } catch {
                fatalError("the fuzz fixture cannot be built in \(directory): \(error)")
            }
        }
    }
}

/// The API, as far as the serving targets need it: every key valid, at once.
private struct AlwaysValid: KeyCheckingClient {
    func check(_ key: APIKey) async -> CheckResult {
        CheckResult(outcome: .valid, httpStatus: 200, latency: .milliseconds(1))
    }
}
