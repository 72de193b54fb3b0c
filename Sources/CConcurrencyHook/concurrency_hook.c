#include "concurrency_hook.h"

extern void *swift_task_enqueueGlobal_hook;

void **recotap_concurrency_enqueue_global_hook(void) { return &swift_task_enqueueGlobal_hook; }
