import ServiceLifecycle

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
