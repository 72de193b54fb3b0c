import CConcurrencyHook
import NIOCore
import NIOPosix

/// Puts Swift concurrency's global executor on SwiftNIO's shared event loops, as
/// `NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()`
/// does, but finding the runtime's hook through the linker instead of `dlsym`: the
/// release binaries link the Swift runtime statically (README "Install from the Debian
/// package"), and a static runtime exports no symbol for `dlsym` to find. Without the hook, tasks run on
/// libdispatch's worker pool, whose monitor wakes the idle daemon every second.
///
/// The same trade as SwiftNIO's: the hook's type is the runtime's, not a public API.
/// Called once, from `main`, before any task exists.
enum ConcurrencyOnEventLoops {
    /// The runtime's hook: the job, and the runtime's own enqueue (not used).
    private typealias EnqueueGlobalHook = @convention(thin) (UnownedJob, @convention(thin) (UnownedJob) -> Void) -> Void

    /// Whether the hook now points at the event loops (false if something else had set it).
    static func install() -> Bool {
        // Only for the runtimes whose hook type is known (SwiftNIO has the same bound);
        // a newer one keeps libdispatch rather than risk a mismatched call.
        #if compiler(<6.6)
        let slot = recotap_concurrency_enqueue_global_hook()
        guard slot.pointee == nil else { return false }
        return withUnsafeTemporaryAllocation(of: EnqueueGlobalHook.self, capacity: 1) { hook in
            hook.baseAddress!.initialize(to: { job, _ in
                // `any()` stays on the current loop when called from one of the group's.
                MultiThreadedEventLoopGroup.singleton.any().executor.enqueue(ExecutorJob(job))
            })
            hook.baseAddress!.withMemoryRebound(to: UnsafeMutableRawPointer?.self, capacity: 1) {
                slot.pointee = $0.pointee
            }
            return true
        }
        #else
        return false
        #endif
    }
}
