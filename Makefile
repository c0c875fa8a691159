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
CONSOLEDIR ?= $(PREFIX)/share/kvserver/console
NGINXDIR ?= $(SYSCONFDIR)/nginx
# The binaries `make install` copies: `make release`'s, built beforehand as yourself (install
# never builds: root needs no toolchain, and none of the build's files become root's).
BIN_DIR ?= $(CURDIR)/.build/release
INSTALL_ENV = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BINDIR="$(BINDIR)" SYSCONFDIR="$(SYSCONFDIR)" \
	UNITDIR="$(UNITDIR)" SYSUSERSDIR="$(SYSUSERSDIR)" DOCDIR="$(DOCDIR)" CONSOLEDIR="$(CONSOLEDIR)" NGINXDIR="$(NGINXDIR)"
RUN_DIR ?= $(CURDIR)/run
# `make run STORE=redis://HOST:PORT` (or redis-cluster://…): the local front ends on that store.
STORE ?=
# `make run ACCESS_FILE=path`: the local front ends enforce that access file (docs/access.md).
ACCESS_FILE ?=
SWIFT ?= swift

# Release binaries carry the Swift runtime (--static-swift-stdlib): a host without the toolchain
# runs them (scripts/check-install.sh proves it with the toolchain hidden).
RELEASE = $(SWIFT) build -c release --static-swift-stdlib

.PHONY: deps build release test run bench fuzz clean install uninstall rollback

# The Debian packages each job needs (scripts/install-deps.sh prints the one line to run when
# you are not root).
deps:
	@scripts/install-deps.sh test

build:
	@scripts/install-deps.sh build
	$(SWIFT) build

release:
	@scripts/install-deps.sh build
	$(RELEASE)

# Unit, channel-level and end-to-end tests. The end-to-end suites start the real daemons,
# so the executables are built first; then the release build is installed into a staging root
# and checked, the README's tour is replayed against `make run`'s stack, the console is driven
# in headless Chromium, and the repository is checked to refer to nothing outside it.
test:
	@scripts/install-deps.sh test
	$(SWIFT) build --build-tests
	$(SWIFT) test
	$(RELEASE)
	scripts/check-install.sh "$(CURDIR)/.build/release"
	scripts/check-docs.py "$(CURDIR)/.build/release"
	scripts/check-console.py "$(CURDIR)/.build/release"
	scripts/check-references.sh --self-test
	scripts/check-references.sh

# Copies `make release`'s binaries, the units, settings, nginx site (sites-available only) and
# docs; as root on a systemd machine (no DESTDIR) it also creates the kvserver user and reloads
# systemd. Settings and the site you changed are kept (the new ones land beside them as *.new);
# the binaries and units replaced are kept for `make rollback`.
install:
	$(INSTALL_ENV) scripts/install.sh install "$(BIN_DIR)"

# Puts back the binaries and units the last `make install` replaced (docs/deploy.md).
rollback:
	$(INSTALL_ENV) scripts/install.sh rollback

# Removes what install put there; never data (/var/lib/kvserver) nor settings you changed.
uninstall:
	$(INSTALL_ENV) scripts/install.sh uninstall

# Starts the local stack in the foreground, as any user; Ctrl-C stops everything it started.
run:
	@scripts/install-deps.sh run
	$(RELEASE)
	@scripts/run-local.sh "$(RUN_DIR)" "$(PORT)" "$(STORE)" "$(ACCESS_FILE)" "$(CURDIR)/.build/release"

bench:
	@scripts/install-deps.sh bench
	$(RELEASE)
	bench/store-vs-redis.sh
	bench/http.sh
	bench/access.sh
	bench/ws.sh
	bench/persistence.sh
	bench/parsers.sh

# libFuzzer over every parser a client or a disk feeds (scripts/fuzz.sh); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/install-deps.sh build
	scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf .build .build-fuzz "$(RUN_DIR)"
