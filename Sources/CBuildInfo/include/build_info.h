#ifndef RECOTAP_BUILD_INFO_H
#define RECOTAP_BUILD_INFO_H

/// The version of every binary of the project.
#define RECOTAP_VERSION "0.1.0"

/// The git revision the binaries were built from (`git describe --always --dirty`),
/// or "unknown" when the build did not say (a plain `swift build`, a tarball).
const char *recotap_git_revision(void);

#endif
