# recotap-keyd — build, run and test.
#
#   make run    build and run the daemon on config/keyd.dev.yaml (state in ./.keyd/)
#   make test   build and run every test
#   make mock   run the bundled mock of the Recotap API on 127.0.0.1:8089
#
# Every target first makes sure the Debian packages the build links against are
# there: as root it installs what is missing; otherwise it says what to install.

SWIFT       ?= swift
DEB_PACKAGES = libsystemd-dev libsqlite3-dev pkg-config
DEV_CONFIG   = config/keyd.dev.yaml

.PHONY: deps build run mock test release clean

deps:
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

release: deps
	$(SWIFT) build -c release

clean:
	rm -rf .build .keyd
