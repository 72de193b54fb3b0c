import ServiceLifecycle

/// The shape of every long-running service here: wait until the daemon has said
/// `READY=1`, run `body`, and stop when graceful shutdown cancels it. Cancellation is
/// the normal way out, not an error — an error would make the ServiceGroup, and so the
/// process, exit non-zero.
func runUntilGracefulShutdown(after readiness: Readiness, _ body: @escaping @Sendable () async throws -> Void) async throws {
    do {
        try await cancelWhenGracefulShutdown {
            await readiness.waitUntilReady()
            try await body()
        }
    } catch is CancellationError {}
}
