# KvServer — the two commands: `make run` (the local stack) and `make test` (every test).
PORT ?= 8080
# `make install`: as a package would place things (see docs/deploy.md).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR ?= $(PREFIX)/share/doc/kvserver
NGINXDIR ?= $(SYSCONFDIR)/nginx
# Where the binaries to install are; `make install` builds release ones unless given.
BIN_DIR ?=
INSTALL_ENV = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BINDIR="$(BINDIR)" SYSCONFDIR="$(SYSCONFDIR)" \
	UNITDIR="$(UNITDIR)" SYSUSERSDIR="$(SYSUSERSDIR)" DOCDIR="$(DOCDIR)" NGINXDIR="$(NGINXDIR)"
RUN_DIR ?= $(CURDIR)/run
# `make run STORE=redis://HOST:PORT` (or redis-cluster://…): the local front ends on that store.
STORE ?=
# `make run ACCESS_FILE=path`: the local front ends enforce that access file (docs/access.md).
ACCESS_FILE ?=
SWIFT ?= swift

.PHONY: deps build release test run bench fuzz clean install uninstall

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Unit, channel-level and end-to-end tests. The end-to-end suites start the real daemons,
# so the executables are built first.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test
	scripts/check-install.sh "$$($(SWIFT) build --show-bin-path)"

# Binaries, units, settings, nginx site (sites-available only) and docs; as root on a systemd
# machine (no DESTDIR) it also creates the kvserver user and reloads systemd.
install:
ifeq ($(BIN_DIR),)
	$(MAKE) release
	$(INSTALL_ENV) scripts/install.sh install "$$($(SWIFT) build -c release --show-bin-path)"
else
	$(INSTALL_ENV) scripts/install.sh install "$(BIN_DIR)"
endif

# Removes what install put there; never data (/var/lib/kvserver) nor settings you changed.
uninstall:
	$(INSTALL_ENV) scripts/install.sh uninstall

# Starts the local stack in the foreground; Ctrl-C stops everything it started.
run: deps release
	@scripts/run-local.sh "$(RUN_DIR)" "$(PORT)" "$(STORE)" "$(ACCESS_FILE)"

bench: deps release
	bench/store-vs-redis.sh
	bench/http.sh
	bench/access.sh
	bench/ws.sh
	bench/persistence.sh
	bench/parsers.sh

# libFuzzer over every parser a client or a disk feeds (scripts/fuzz.sh); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf .build .build-fuzz "$(RUN_DIR)"
