import Foundation
import Logging
import ServiceLifecycle

/// `metrics.textfile` (README "Monitoring"): the metrics, without the `process_*` ones
/// (node_exporter exports its own under those names), in a file for node_exporter's
/// textfile collector. Written at start, then after every check, spool verdict and
/// commit that touches the active key — replaced atomically, so the collector never
/// reads a part. Mode 0644: it holds nothing secret. A failed write is logged (once
/// per distinct reason) and never stops the daemon.
struct MetricsTextfileService: Service, CustomStringConvertible {
    let path: String
    let serving: ServingContext
    let published: CurrentKey.Subscription
    let logger: Logger
    var description: String { "MetricsTextfileService" }

    func run() async throws {
        let metrics = serving.metrics
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                // A commit touching the active key rings the same bell as a check.
                group.addTask {
                    for await _ in published { metrics.changed.ring() }
                }
                var lastError: String?
                while !Task.isCancelled {
                    await metrics.changed.wait()
                    if Task.isCancelled { break }
                    do throws(AtomicFile.WriteError) {
                        try AtomicFile.replace(path, with: serving.renderMetrics(process: false), mode: 0o644, sync: false)
                        lastError = nil
                    } catch {
                        if lastError != error.description {
                            logger.warning(
                                "cannot update the metrics textfile: \(error.description)",
                                metadata: ["metrics.textfile": .string(path)])
                        }
                        lastError = error.description
                    }
                }
                group.cancelAll()
            }
        }
    }
}
