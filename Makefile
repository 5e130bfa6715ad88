# Tickwire: `make run` builds and starts the server; `make test` runs every test.
SWIFT        ?= swift
BUILD_DIR    ?= .build
RELEASE_BIN  := $(BUILD_DIR)/release/tickwire
DEBUG_BIN    := $(BUILD_DIR)/debug/tickwire
PORT         ?= 8080
RUN_FLAGS    ?=
# The project's virtualenv (made by `make deps`): every Python tool runs from it.
VENV         ?= .venv
PYTHON       := $(VENV)/bin/python
# libFuzzer targets (Fuzz/): seconds per target for `make fuzz`, and within `make test`.
FUZZ_SECONDS ?= 300
FUZZ_TEST_SECONDS ?= 15
# A test process that crashes prints its crashed thread's whole stack, unwound through libc
# (the default fast unwinder stops at its first frame), without registers or the image
# list, so that the end of a CI log shows where it was.
SWIFT_BACKTRACE ?= enable=yes,unwind=precise,threads=crashed,registers=none,images=none,limit=200
export SWIFT_BACKTRACE
# glibc's own fatal messages (heap corruption, a failed assertion in a C library) go to
# stderr, not to /dev/tty, so that they too reach the log.
export LIBC_FATAL_STDERR_ = 1

.PHONY: all deps build release run test unit conformance fuzz fuzz-build bench bench-quick profile clean

all: build

deps:
	@VENV=$(VENV) scripts/deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

run: release
	$(RELEASE_BIN) --port $(PORT) $(RUN_FLAGS)

# Unit and integration tests (real sockets on loopback), Autobahn conformance, every
# parser under libFuzzer for a short while, the deployment files through their real
# validators, and the dashboard in headless Chromium.
# (validate-deploy runs first: it also installs promtool, which the metrics tests use.)
test: deps
	scripts/validate-deploy.sh
	$(SWIFT) build
	$(SWIFT) test
	$(PYTHON) scripts/conformance.py $(DEBUG_BIN) $(BUILD_DIR)/conformance
	TICKWIRE_BIN=$(DEBUG_BIN) $(PYTHON) -m pytest -q Tests/TLS Tests/Auth Tests/Compression
	# The cluster: each test starts its own redis-server on a free loopback port and stops it.
	TICKWIRE_BIN=$(DEBUG_BIN) $(PYTHON) -m pytest -q Tests/Cluster
	# max_frequency over real sockets: rate, newest value, events never throttled, resume (issue 12).
	TICKWIRE_BIN=$(DEBUG_BIN) $(PYTHON) -m pytest -q Tests/Conflation
	# Upstream feeds against a fake Binance-format upstream on loopback.
	TICKWIRE_BIN=$(DEBUG_BIN) $(PYTHON) -m pytest -q Tests/Upstream
	Fuzz/fuzz.sh run $(FUZZ_TEST_SECONDS)
	VENV=$(VENV) scripts/browser-test.sh $(DEBUG_BIN)

unit: deps
	$(SWIFT) build
	$(SWIFT) test

# Autobahn TestSuite sections 1-13 (12, 13: permessage-deflate) against /echo (kosoku), on a release build.
conformance: release
	$(PYTHON) scripts/conformance.py $(RELEASE_BIN) $(BUILD_DIR)/conformance

# Every libFuzzer target for FUZZ_SECONDS each, one after the other (Fuzz/README.md).
# FUZZ_TARGETS="http-head utf8" picks some.
fuzz: deps
	Fuzz/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-build: deps
	Fuzz/fuzz.sh build

# Tickwire beside the kernel-floor server, same generator, pinned CPUs; reports, never fails
# on a number. Results: $(BUILD_DIR)/bench/summary.md and one JSON file per run.
# BASELINE=path/to/an/earlier/tickwire adds that build to every scenario, alternated.
bench: release
	$(PYTHON) scripts/bench.py --out $(BUILD_DIR)/bench $(if $(BASELINE),--baseline $(BASELINE))
	$(PYTHON) scripts/bench_security.py --binary $(RELEASE_BIN) --out $(BUILD_DIR)/bench
	$(PYTHON) scripts/bench_deflate.py $(RELEASE_BIN) | tee $(BUILD_DIR)/bench/deflate.jsonl
	$(PYTHON) scripts/bench_cluster.py --out $(BUILD_DIR)/bench

bench-quick: release
	$(PYTHON) scripts/bench.py --quick --out $(BUILD_DIR)/bench-quick

# User-space instructions per broadcast delivery under callgrind (repeatable to a fraction of
# a percent, unlike wall-clock numbers); BASELINE=... compares with an earlier build.
profile: release
	@VENV=$(VENV) EXTRA_DEBIAN="valgrind binutils" scripts/deps.sh
	$(PYTHON) scripts/profile.py $(RELEASE_BIN) $(BASELINE)

clean:
	rm -rf $(BUILD_DIR) .build-fuzz
