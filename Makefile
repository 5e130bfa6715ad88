# Tickwire: `make run` builds and starts the server; `make test` runs every test.
SWIFT        ?= swift
BUILD_DIR    ?= .build
RELEASE_BIN  := $(BUILD_DIR)/release/tickwire
DEBUG_BIN    := $(BUILD_DIR)/debug/tickwire
PORT         ?= 8080
RUN_FLAGS    ?=

.PHONY: all deps build release run test unit conformance bench bench-quick clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

run: release
	$(RELEASE_BIN) --port $(PORT) $(RUN_FLAGS)

# Unit and integration tests (real sockets on loopback), Autobahn conformance, the
# deployment files through their real validators, and the dashboard in headless Chromium.
# (validate-deploy runs first: it also installs promtool, which the metrics tests use.)
test: deps
	scripts/validate-deploy.sh
	$(SWIFT) build
	$(SWIFT) test
	python3 scripts/conformance.py $(DEBUG_BIN) $(BUILD_DIR)/conformance
	scripts/browser-test.sh $(DEBUG_BIN)

unit: deps
	$(SWIFT) build
	$(SWIFT) test

# Autobahn TestSuite sections 1-10 against /echo (kosoku), on a release build.
conformance: release
	python3 scripts/conformance.py $(RELEASE_BIN) $(BUILD_DIR)/conformance

# Tickwire beside the kernel-floor server, same generator, pinned CPUs; reports, never fails
# on a number. Results: $(BUILD_DIR)/bench/summary.md and one JSON file per run.
bench: release
	python3 scripts/bench.py --out $(BUILD_DIR)/bench

bench-quick: release
	python3 scripts/bench.py --quick --out $(BUILD_DIR)/bench-quick

clean:
	rm -rf $(BUILD_DIR)
