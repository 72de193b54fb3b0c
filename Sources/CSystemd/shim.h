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

/* SO_PEERGROUPS (Linux 4.13): the supplementary groups the peer held at connect(2).
   Read into this fixed buffer, which the reader zero-fills first: slots the kernel
   did not write stay 0. A peer in more groups than fit gets ERANGE. */
#define RECOTAP_SO_PEERGROUPS 59
struct recotap_peer_groups {
    gid_t gids[256];
};

/* prctl is variadic, and Swift does not import variadic C functions. */
static inline int recotap_set_dumpable(int dumpable) {
    return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL);
}

#endif
