import ServiceLifecycle
import Synchronization

/// Work that a request starts off the event loops — store reads, admin checks, the
/// check a consumer's report asks for — run as child tasks of one service
/// (``RequestWorkService``) rather than as unstructured tasks: none outlives the
/// daemon, and a graceful shutdown cancels what is in flight (an admin check waiting
/// for a 401's confirmation answers at once).
public final class RequestWork: Sendable {
    public typealias Work = @Sendable () async -> Void
    private let stream: AsyncStream<Work>
    private let continuation: AsyncStream<Work>.Continuation

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: Work.self)
    }

    /// Runs `work` as soon as possible; `false` once the daemon is shutting down (the
    /// caller answers without it).
    @discardableResult
    public func submit(_ work: @escaping Work) -> Bool {
        if case .enqueued = continuation.yield(work) { return true }
        return false
    }

    /// Runs what is submitted until ``finish()``; then starts what was already
    /// submitted, cancels it all, and returns when the last has ended. Every submitted
    /// piece of work runs (cancelled, it ends early), so whoever waits on one is answered.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await work in stream {
                group.addTask { await work() }
            }
            group.cancelAll()
        }
    }

    /// Refuses new work; ``run()`` ends once what was submitted has ended.
    public func finish() {
        continuation.finish()
    }
}

/// The checks consumers' reports ask for, coalesced: at most one runs (waiting in
/// the checker for its answer), and one more follows it when reports arrived
/// meanwhile. A report is never lost — a check starts after it — and a flood of
/// reports costs one task, not one per report waiting on the API.
final class ReportChecks: Sendable {
    private let state = Mutex((running: false, again: false))

    enum Outcome: Hashable {
        /// A check task started for this report.
        case started
        /// A running one will check again after it ends.
        case coalesced
        /// The daemon is shutting down.
        case refused
    }

    /// Whether a check task is running.
    var isRunning: Bool { state.withLock { $0.running } }

    /// Asks for a check after this report.
    func request(_ checker: KeyChecker, on work: RequestWork) -> Outcome {
        let start = state.withLock { state -> Bool in
            if state.running {
                state.again = true
                return false
            }
            state.running = true
            return true
        }
        guard start else { return .coalesced }
        let submitted = work.submit { [self] in
            repeat {
                _ = await checker.checkNow(reason: .consumerReport)
            } while state.withLock { state in
                defer { state.again = false }
                if state.again, !Task.isCancelled { return true }
                state.running = false
                return false
            }
        }
        guard submitted else {
            state.withLock { $0.running = false }
            return .refused
        }
        return .started
    }
}

/// Runs ``RequestWork`` for the daemon's lifetime.
struct RequestWorkService: Service, CustomStringConvertible {
    let work: RequestWork
    var description: String { "RequestWorkService" }

    func run() async throws {
        await withGracefulShutdownHandler {
            await work.run()
        } onGracefulShutdown: {
            work.finish()
        }
    }
}
