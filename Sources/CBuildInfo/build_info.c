#include "build_info.h"

// revision.h is written by `make` (the `revision` target) before every build, and
// only when the revision changed: only this file is recompiled then. It is not in git.
#if __has_include("revision.h")
#include "revision.h"
#endif
#ifndef RECOTAP_GIT_REVISION
#define RECOTAP_GIT_REVISION "unknown"
#endif

const char *recotap_git_revision(void) { return RECOTAP_GIT_REVISION; }
