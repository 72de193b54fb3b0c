# recotap-keyd — build, run and test.
#
#   make run    build and run the daemon on config/keyd.dev.yaml (state in ./.keyd/)
#   make test   build and run every test: Swift Testing, then the system tests under a
#               real systemd (Tests/system/run-system-tests; skipped, saying why, where
#               they cannot run)
#   make mock   run the bundled mock of the Recotap API on 127.0.0.1:8089
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="routes classifier"] [FUZZ_CONFIGURATION=release|debug]
#               build the fuzz runner with libFuzzer and AddressSanitizer (in
#               .build-fuzz/) and run each target for FUZZ_SECONDS (Fuzz/run-fuzzers)
#   make bench  build the release binaries and print the README's performance table
#               (recotap-keyd-bench --table: start → READY, RSS, idle wake-ups,
#               keep-alive and connect-per-request throughput against nginx — where
#               nginx-light is installed — and a plain SwiftNIO server)
#   make install [DESTDIR=…] [PREFIX=/usr/local] [BUILD=release|debug]
#               install the binaries, systemd units, sysusers.d, tmpfiles.d, the
#               journal catalog, the Prometheus alert rules (share/doc/recotap-keyd/prometheus),
#               recotap-keyd.yaml(5) written from the key table, bash/zsh/fish completions
#               and /etc/recotap-keyd/keyd.yaml (never overwritten)
#
# Every target first makes sure the Debian packages the build links against are
# there: as root it installs what is missing; otherwise it says what to install.

SWIFT       ?= swift
DEB_PACKAGES = libsystemd-dev libsqlite3-dev pkg-config
DEV_CONFIG   = config/keyd.dev.yaml

PREFIX      ?= /usr/local
DESTDIR     ?=
BUILD       ?= release
BINDIR       = $(PREFIX)/bin
LIBDIR       = $(PREFIX)/lib
UNITDIR      = $(LIBDIR)/systemd/system
SYSUSERSDIR  = $(LIBDIR)/sysusers.d
TMPFILESDIR  = $(LIBDIR)/tmpfiles.d
CATALOGDIR   = $(LIBDIR)/systemd/catalog
DOCDIR       = $(PREFIX)/share/doc/recotap-keyd
MANDIR       = $(PREFIX)/share/man
BASHCOMPDIR  = $(PREFIX)/share/bash-completion/completions
# zsh reads vendor-completions under /usr (a package), site-functions elsewhere.
ZSHCOMPDIR   = $(if $(filter /usr,$(PREFIX)),$(PREFIX)/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)
FISHCOMPDIR  = $(PREFIX)/share/fish/vendor_completions.d
CONFDIR      = /etc/recotap-keyd

# Release builds link the Swift runtime dynamically: a static runtime (--static-swift-stdlib)
# saves ~3 MiB of resident memory but hides the hook that puts Swift concurrency on
# SwiftNIO's loops, and libdispatch's pool monitor then wakes the daemon every second
# (README "Performance").
RELEASE_BUILD = $(SWIFT) build -c release
BUILD_CMD    = $(if $(filter release,$(BUILD)),$(RELEASE_BUILD),$(SWIFT) build -c $(BUILD))

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_CONFIGURATION ?= release
FUZZ_BUILD   = $(SWIFT) build -c $(FUZZ_CONFIGURATION) --scratch-path .build-fuzz --product recotap-keyd-fuzz \
               -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DRECOTAP_FUZZ

.PHONY: deps revision build run mock test release install clean fuzz fuzz-build bench

# The git revision every binary's --version prints: written only when it changed, so a
# new commit recompiles one C file (Sources/CBuildInfo/build_info.c) and relinks.
REVISION_H = Sources/CBuildInfo/revision.h
revision:
	@rev=$$(git describe --always --dirty 2>/dev/null || echo unknown); \
	line="#define RECOTAP_GIT_REVISION \"$$rev\""; \
	[ "$$(cat $(REVISION_H) 2>/dev/null)" = "$$line" ] || echo "$$line" > $(REVISION_H)

deps: revision
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing missing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing"; \
	    exit 1; \
	  fi; \
	fi

build: deps
	$(SWIFT) build

run: build
	exec .build/debug/recotap-keyd --config $(DEV_CONFIG)

mock: build
	exec .build/debug/recotap-api-mock --port 8089

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	Tests/system/run-system-tests

fuzz-build: deps
	$(FUZZ_BUILD)

fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BINARY=$$($(FUZZ_BUILD) --show-bin-path)/recotap-keyd-fuzz \
	  Fuzz/run-fuzzers $(FUZZ_TARGETS)

release: deps
	$(RELEASE_BUILD)

bench: deps
	$(RELEASE_BUILD) --product recotap-keyd
	$(RELEASE_BUILD) --product recotap-keyd-bench
	$$($(RELEASE_BUILD) --show-bin-path)/recotap-keyd-bench --table $(BENCH_ARGS)

install: deps
	$(BUILD_CMD) --product recotap-keyd
	$(BUILD_CMD) --product recotap-keyctl
	$(BUILD_CMD) --product recotap-api-mock
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	  $(DESTDIR)$(CATALOGDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(CONFDIR)
	bin=$$($(BUILD_CMD) --show-bin-path); \
	for p in recotap-keyd recotap-keyctl recotap-api-mock; do install -m 0755 $$bin/$$p $(DESTDIR)$(BINDIR)/$$p; done
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' systemd/recotap-keyd.service.in \
	  > $(DESTDIR)$(UNITDIR)/recotap-keyd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/recotap-keyd.service
	install -m 0644 systemd/recotap-keyd.socket $(DESTDIR)$(UNITDIR)/recotap-keyd.socket
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' 'systemd/recotap-keyd-restart@.service.in' \
	  > '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.service'
	sed -e 's|@DOCDIR@|$(DOCDIR)|g' 'systemd/recotap-keyd-restart@.path' > '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.path'
	chmod 0644 '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.service' '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.path'
	install -m 0644 systemd/recotap-keyd.sysusers $(DESTDIR)$(SYSUSERSDIR)/recotap-keyd.conf
	install -m 0644 systemd/recotap-keyd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/recotap-keyd.conf
	install -m 0644 systemd/recotap-keyd.catalog $(DESTDIR)$(CATALOGDIR)/recotap-keyd.catalog
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	bin=$$($(BUILD_CMD) --show-bin-path); \
	$$bin/recotap-keyd --config-manual > $(DESTDIR)$(MANDIR)/man5/recotap-keyd.yaml.5 && \
	for p in recotap-keyd recotap-keyctl; do \
	  $$bin/$$p --generate-completion-script bash > $(DESTDIR)$(BASHCOMPDIR)/$$p && \
	  $$bin/$$p --generate-completion-script zsh > $(DESTDIR)$(ZSHCOMPDIR)/_$$p && \
	  $$bin/$$p --generate-completion-script fish > $(DESTDIR)$(FISHCOMPDIR)/$$p.fish || exit 1; \
	done; \
	chmod 0644 $(DESTDIR)$(MANDIR)/man5/recotap-keyd.yaml.5 $(DESTDIR)$(BASHCOMPDIR)/recotap-keyd* \
	  $(DESTDIR)$(ZSHCOMPDIR)/_recotap-keyd* $(DESTDIR)$(FISHCOMPDIR)/recotap-keyd*
	install -d $(DESTDIR)$(DOCDIR)/prometheus
	install -m 0644 contrib/prometheus/recotap-keyd.rules.yml contrib/prometheus/recotap-keyd.rules.test.yml \
	  $(DESTDIR)$(DOCDIR)/prometheus/
	test -e $(DESTDIR)$(CONFDIR)/keyd.yaml || install -m 0644 config/keyd.yaml $(DESTDIR)$(CONFDIR)/keyd.yaml
	if [ -z "$(DESTDIR)" ]; then \
	  journalctl --update-catalog; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

clean:
	rm -rf .build .build-fuzz .fuzz .keyd
