# Tickwire: `make run` builds and starts the server; `make test` runs every test.
SWIFT        ?= swift
BUILD_DIR    ?= .build
RELEASE_BIN  := $(BUILD_DIR)/release/tickwire
DEBUG_BIN    := $(BUILD_DIR)/debug/tickwire
PORT         ?= 8080
RUN_FLAGS    ?=

.PHONY: all deps build release run test unit conformance clean

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
test: deps
	$(SWIFT) build
	$(SWIFT) test
	python3 scripts/conformance.py $(DEBUG_BIN) $(BUILD_DIR)/conformance
	scripts/validate-deploy.sh
	scripts/browser-test.sh $(DEBUG_BIN)

unit: deps
	$(SWIFT) build
	$(SWIFT) test

# Autobahn TestSuite sections 1-10 against /echo (kosoku), on a release build.
conformance: release
	python3 scripts/conformance.py $(RELEASE_BIN) $(BUILD_DIR)/conformance

clean:
	rm -rf $(BUILD_DIR)
