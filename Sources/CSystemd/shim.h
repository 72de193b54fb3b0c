#ifndef RECOTAP_CSYSTEMD_SHIM_H
#define RECOTAP_CSYSTEMD_SHIM_H

#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <sys/prctl.h>

/* `struct ucred` needs _GNU_SOURCE, which Swift's Glibc module lacks; this has the
   same layout and is what SO_PEERCRED fills in. */
struct recotap_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

/* prctl is variadic, and Swift does not import variadic C functions. */
static inline int recotap_set_dumpable(int dumpable) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL);
}

#endif
