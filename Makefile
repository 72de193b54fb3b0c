# recotap-keyd — build, run and test.
#
#   make run    build and run the daemon on config/keyd.dev.yaml (state in ./.keyd/)
#   make test   build and run every test: Swift Testing, then the system tests under a
#               real systemd (Tests/system/run-system-tests; skipped, saying why, where
#               they cannot run)
#   make mock   run the bundled mock of the Recotap API on 127.0.0.1:8089
#   make release    the release build (static Swift runtime) of every product
#   make man    recotap-keyd(8) and recotap-keyctl(1) into .build/man (make install runs it)
#   make clean  remove the build trees and the development state (.keyd/)
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="routes classifier"] [FUZZ_CONFIGURATION=release|debug]
#               build the fuzz runner with libFuzzer and AddressSanitizer (in
#               .build-fuzz/) and run each target for FUZZ_SECONDS (Fuzz/run-fuzzers)
#   make bench  build the release binaries and print the README's performance table
#               (recotap-keyd-bench --table: start → READY, RSS, idle wake-ups,
#               keep-alive and connect-per-request throughput against nginx — where
#               nginx-light is installed — and a plain SwiftNIO server)
#   make install [DESTDIR=…] [PREFIX=/usr/local] [BUILD=release|debug] [INSTALL_MOCK=yes|no]
#               install the binaries (and the API mock, unless INSTALL_MOCK=no), systemd
#               units, sysusers.d, tmpfiles.d, the journal catalog, the Prometheus alert
#               rules (share/recotap-keyd/prometheus), recotap-keyd(8),
#               recotap-keyctl(1), recotap-keyd.yaml(5) written from the key table,
#               bash/zsh/fish completions and /etc/recotap-keyd/keyd.yaml (never overwritten)
#   make deb    build the Debian package (debian/, dpkg-buildpackage) into dist/ and run
#               lintian on it
#   make deb-test
#               make deb, then install the package with apt under a real systemd with
#               /opt/swift hidden, use it, and purge it (Tests/system/run-package-test)
#
# Every building target first makes sure the Debian packages the build links against are
# there: as root it installs what is missing; otherwise it says what to install.

SWIFT       ?= swift
DEB_PACKAGES = libsystemd-dev libsqlite3-dev zlib1g-dev pkg-config
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
# Prometheus reads the rules from here: not under doc/, which hosts may leave out.
RULESDIR     = $(PREFIX)/share/recotap-keyd/prometheus
MANDIR       = $(PREFIX)/share/man
BASHCOMPDIR  = $(PREFIX)/share/bash-completion/completions
# zsh reads vendor-completions under /usr (a package), site-functions elsewhere.
ZSHCOMPDIR   = $(if $(filter /usr,$(PREFIX)),$(PREFIX)/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)
FISHCOMPDIR  = $(PREFIX)/share/fish/vendor_completions.d
CONFDIR      = /etc/recotap-keyd

# Release builds link the Swift runtime and Foundation statically: the binaries need only
# Debian's libraries (libc, libstdc++, libsystemd, libsqlite3, zlib) and run where no
# Swift toolchain is installed (README "Install from the Debian package"). The daemon
# finds the runtime's global-executor hook through the linker, not dlsym, which a static
# runtime defeats (Sources/recotap-keyd/ConcurrencyOnEventLoops.swift).
# -z now: the whole GOT read-only after start (full RELRO, lintian's hardening-no-bindnow).
RELEASE_BUILD = $(SWIFT) build -c release --static-swift-stdlib -Xlinker -z -Xlinker now
BUILD_CMD    = $(if $(filter release,$(BUILD)),$(RELEASE_BUILD),$(SWIFT) build -c $(BUILD))

INSTALL_MOCK ?= yes
# recotap-keyctl is installed as a symlink to recotap-keyd, which runs recotap-keyctl when
# called by that name: one binary, one copy of the Swift runtime (82 MB stripped).
INSTALLED    = recotap-keyd $(if $(filter yes,$(INSTALL_MOCK)),recotap-api-mock)

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_CONFIGURATION ?= release
FUZZ_BUILD   = $(SWIFT) build -c $(FUZZ_CONFIGURATION) --scratch-path .build-fuzz --product recotap-keyd-fuzz \
               -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DRECOTAP_FUZZ

.PHONY: deps revision build run mock test release install man clean fuzz fuzz-build bench deb deb-test fleet-test fleet-bench

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

# README "Fleets": N hosts in network namespaces heal from one regeneration through
# the AWS CLI and moto's Secrets Manager API (pip install 'moto[server]' awscli).
FLEET_HOSTS ?= 10
fleet-test: DEB_PACKAGES += iproute2 curl
fleet-test: build
	Tests/fleet/run-fleet-test $(FLEET_HOSTS) .build/debug

fleet-bench: DEB_PACKAGES += iproute2 curl
fleet-bench: build
	Tests/fleet/run-fleet-test 50 .build/debug

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

# recotap-keyd(8) and recotap-keyctl(1), from ArgumentParser's generate-manual (the
# tool behind its plugin, which cannot give each page its own section), into $(MANOUT).
# Then made lint-clean for mandoc -T lint: one sentence per line, text lines within 80
# bytes (a word that would start a line with . or ' is escaped), no full stop ending
# the one-line description, and no "subcommand" in the daemon's synopsis (its only
# subcommand is ArgumentParser's own help).
MANOUT      ?= .build/man
MAN_DATE    ?= $(shell git log -1 --format=%cs 2>/dev/null || date +%F)
man: deps
	$(SWIFT) build --product generate-manual
	$(BUILD_CMD) --product recotap-keyd
	$(BUILD_CMD) --product recotap-keyctl
	mkdir -p $(MANOUT)
	gen=$$($(SWIFT) build --show-bin-path)/generate-manual; bin=$$($(BUILD_CMD) --show-bin-path); \
	$$gen $$bin/recotap-keyd --section 8 --date $(MAN_DATE) -o $(MANOUT) && \
	$$gen $$bin/recotap-keyctl --section 1 --date $(MAN_DATE) -o $(MANOUT)
	for page in $(MANOUT)/recotap-keyd.8 $(MANOUT)/recotap-keyctl.1; do \
	  sed -e '/^\.Nd /s/\."$$/"/' -e '/^[^. ]/s/\([a-z0-9)]\)\. \([A-Z(]\)/\1.\n\2/g' $$page | \
	  awk '/^[. ]/ || length($$0) <= 80 { print; next } \
	    { out = ""; n = split($$0, w, " "); \
	      for (i = 1; i <= n; i++) { \
	        if (out != "" && length(out) + 1 + length(w[i]) > 80) { print out; out = "" } \
	        word = (out == "" && w[i] ~ /^[.'"'"']/) ? "\\&" w[i] : w[i]; \
	        out = (out == "") ? word : out " " word } \
	      print out }' > $$page.new && mv $$page.new $$page || exit 1; \
	done
	sed -i '/^\.Ar subcommand$$/d' $(MANOUT)/recotap-keyd.8

install: deps man
	for p in $(INSTALLED); do $(BUILD_CMD) --product $$p || exit 1; done
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	  $(DESTDIR)$(CATALOGDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(CONFDIR)
	bin=$$($(BUILD_CMD) --show-bin-path); \
	for p in $(INSTALLED); do install -m 0755 $$bin/$$p $(DESTDIR)$(BINDIR)/$$p; done
	ln -sfn recotap-keyd $(DESTDIR)$(BINDIR)/recotap-keyctl
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' systemd/recotap-keyd.service.in \
	  > $(DESTDIR)$(UNITDIR)/recotap-keyd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/recotap-keyd.service
	sed -e 's|@DOCDIR@|$(DOCDIR)|g' systemd/recotap-keyd.socket.in > $(DESTDIR)$(UNITDIR)/recotap-keyd.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/recotap-keyd.socket
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' 'systemd/recotap-keyd-restart@.service.in' \
	  > '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.service'
	sed -e 's|@DOCDIR@|$(DOCDIR)|g' 'systemd/recotap-keyd-restart@.path' > '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.path'
	chmod 0644 '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.service' '$(DESTDIR)$(UNITDIR)/recotap-keyd-restart@.path'
	install -m 0644 systemd/recotap-keyd.sysusers $(DESTDIR)$(SYSUSERSDIR)/recotap-keyd.conf
	install -m 0644 systemd/recotap-keyd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/recotap-keyd.conf
	install -m 0644 systemd/recotap-keyd.catalog $(DESTDIR)$(CATALOGDIR)/recotap-keyd.catalog
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(MANOUT)/recotap-keyd.8 $(DESTDIR)$(MANDIR)/man8/recotap-keyd.8
	install -m 0644 $(MANOUT)/recotap-keyctl.1 $(DESTDIR)$(MANDIR)/man1/recotap-keyctl.1
	install -d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	bin=$$($(BUILD_CMD) --show-bin-path); \
	$$bin/recotap-keyd --config-manual > $(DESTDIR)$(MANDIR)/man5/recotap-keyd.yaml.5 && \
	for p in recotap-keyd recotap-keyctl; do \
	  $$bin/$$p --generate-completion-script bash | sed '1{/^#!/d}' > $(DESTDIR)$(BASHCOMPDIR)/$$p && \
	  $$bin/$$p --generate-completion-script zsh > $(DESTDIR)$(ZSHCOMPDIR)/_$$p && \
	  $$bin/$$p --generate-completion-script fish > $(DESTDIR)$(FISHCOMPDIR)/$$p.fish || exit 1; \
	done; \
	chmod 0644 $(DESTDIR)$(MANDIR)/man5/recotap-keyd.yaml.5 $(DESTDIR)$(BASHCOMPDIR)/recotap-keyd* \
	  $(DESTDIR)$(ZSHCOMPDIR)/_recotap-keyd* $(DESTDIR)$(FISHCOMPDIR)/recotap-keyd*
	install -d $(DESTDIR)$(RULESDIR)
	install -m 0644 contrib/prometheus/recotap-keyd.rules.yml contrib/prometheus/recotap-keyd.rules.test.yml \
	  $(DESTDIR)$(RULESDIR)/
	test -e $(DESTDIR)$(CONFDIR)/keyd.yaml || install -m 0644 config/keyd.yaml $(DESTDIR)$(CONFDIR)/keyd.yaml
	if [ -z "$(DESTDIR)" ]; then \
	  journalctl --update-catalog; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

# The package: dpkg-buildpackage writes next to the checkout, so its files are moved into
# dist/. lintian fails the target on any error (README lists the warnings it leaves).
DEB_VERSION = $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB_ARCH    = $(shell dpkg --print-architecture)
deb: DEB_PACKAGES += debhelper dpkg-dev lintian
deb: deps
	dpkg-buildpackage -b -uc -us
	mkdir -p dist
	for f in recotap-keyd_$(DEB_VERSION)_$(DEB_ARCH).deb recotap-keyd-dbgsym_$(DEB_VERSION)_$(DEB_ARCH).deb \
	  recotap-keyd_$(DEB_VERSION)_$(DEB_ARCH).buildinfo recotap-keyd_$(DEB_VERSION)_$(DEB_ARCH).changes; do \
	  if [ -e ../$$f ]; then mv ../$$f dist/; fi; \
	done
	lintian --fail-on error --info dist/recotap-keyd_$(DEB_VERSION)_$(DEB_ARCH).deb

deb-test: deb
	$(RELEASE_BUILD) --product recotap-api-mock
	Tests/system/run-package-test dist/recotap-keyd_$(DEB_VERSION)_$(DEB_ARCH).deb \
	  $$($(RELEASE_BUILD) --show-bin-path)/recotap-api-mock

clean:
	rm -rf .build .build-fuzz .fuzz .keyd
