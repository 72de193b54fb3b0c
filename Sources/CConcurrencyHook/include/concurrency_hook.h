#ifndef RECOTAP_CONCURRENCY_HOOK_H
#define RECOTAP_CONCURRENCY_HOOK_H

/// The address of the Swift concurrency runtime's `swift_task_enqueueGlobal_hook`: the
/// function every job for the global executor goes through when it is set.
///
/// SwiftNIO finds the hook with `dlsym`, which cannot see it in a binary linked with
/// `--static-swift-stdlib` (the runtime's symbols are linked with `--exclude-libs ALL`,
/// so none is exported). A reference resolved by the linker finds it either way: in
/// `libswift_Concurrency.so`, or in the binary itself.
void *_Nullable *_Nonnull recotap_concurrency_enqueue_global_hook(void);

#endif
