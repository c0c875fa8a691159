# KvServer — the two commands: `make run` (the local stack) and `make test` (every test).
PORT ?= 8080
RUN_DIR ?= $(CURDIR)/run
SWIFT ?= swift

.PHONY: deps build release test run bench clean

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

# Starts the local stack in the foreground; Ctrl-C stops everything it started.
run: deps release
	@scripts/run-local.sh "$(RUN_DIR)" "$(PORT)"

bench: deps release
	bench/store-vs-redis.sh
	bench/http.sh
	bench/ws.sh

clean:
	rm -rf .build "$(RUN_DIR)"
