import Foundation
import Logging
import ServiceLifecycle

/// Keeps the store's promises (README "The store"): the secrets of retired keys the
/// API confirmed invalid, or retired more than 7 days ago, are erased, and the check
/// history is bounded — by the running daemon, once `READY=1` is sent, again whenever
/// the active key changes (a rotation retires one), and at least daily. Erased secrets
/// are gone from the database file (`secure_delete`) and its WAL (checkpointed and
/// truncated). Idle, it sleeps until the next day or the next commit of the active key.
struct RetentionService: Service, CustomStringConvertible {
    let store: KeyStore
    let clock: any SchedulerClock
    let readiness: Readiness
    let logger: Logger
    /// The store's published key, taken when the service is built.
    let published: CurrentKey.Subscription
    var policy = RetentionPolicy.standard
    /// The longest time between two passes.
    static let interval: Duration = .seconds(86_400)

    var description: String { "RetentionService" }

    func run() async throws {
        try await runUntilGracefulShutdown(after: readiness) {
            var activeID = published.poll()??.id
            while !Task.isCancelled {
                await pass()
                if let next = await rotation(from: activeID, until: clock.now.adding(Self.interval)) {
                    activeID = next
                }
            }
        }
    }

    /// One pass: what the policy says goes, logged with counts (never which keys).
    func pass() async {
        do {
            let report = try await store.applyRetention(now: clock.now, policy: policy)
            let metadata: Logger.Metadata = [
                "retention.secrets_erased": .stringConvertible(report.secretsErased),
                "retention.checks_deleted": .stringConvertible(report.checksDeleted),
            ]
            let message: Logger.Message = "retention: erased the secrets of \(report.secretsErased) retired key(s), deleted \(report.checksDeleted) old check(s)"
            if report.secretsErased > 0 || report.checksDeleted > 0 {
                logger.info(message, metadata: metadata)
            } else {
                logger.debug(message, metadata: metadata)
            }
            if report.walPending {
                logger.warning(
                    "retention: another process holds the database open, so erased secrets may remain in \(store.path)-wal; tried again at the next pass (a rotation, or within a day)")
            }
        } catch {
            logger.error("retention failed, tried again at the next rotation or within a day: \(error)")
        }
    }

    /// Waits until another key is active (returns its id, `.some(nil)` for none) or
    /// `deadline` (returns `nil`). One sleep per day: the commits that keep the same
    /// key active (every check) wake only the task that follows the store.
    private func rotation(from activeID: Int64?, until deadline: Date) async -> Int64?? {
        let clock = self.clock
        let published = self.published
        return await withTaskGroup(of: Int64??.self) { group in
            group.addTask {
                try? await clock.sleep(for: deadline.since(clock.now))
                return nil
            }
            group.addTask {
                while !Task.isCancelled {
                    await published.changed()
                    if let record = published.poll(), record?.id != activeID { return .some(record?.id) }
                }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
