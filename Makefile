# Vigil — the entry points people type. `make help` lists them.
#
# The two commands a newcomer needs, on a fresh Debian 12 machine:
#   make run    sets up what is missing and runs the demo
#   make test   sets up what is missing and runs every test CI runs
#
# TFLITE_DIR points the build at a TensorFlow Lite C runtime you already have
# (include/ plus lib/linux_<arch>/libtensorflowlite_c.so, or set TFLITE_LIB
# to the folder holding the host's library). By default `make setup` fetches
# TFLite 2.9.0 into cross/.cache.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

GO        ?= go
ROOT      := $(CURDIR)
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
HOSTARCH  := $(shell $(GO) env GOARCH)

CACHE_RT  := $(ROOT)/cross/.cache/tflite-2.9.0
# Only a TFLITE_DIR given by the user reaches cross/setup.sh (from the
# environment); the default is the cache that setup fills.
ifeq ($(origin TFLITE_DIR),undefined)
TFLITE_DIR := $(CACHE_RT)
endif
TFLITE_LIB ?= $(TFLITE_DIR)/lib/linux_$(HOSTARCH)
TFLITE_LIB_ARM64 ?= $(TFLITE_DIR)/lib/linux_arm64

STATICCHECK_VERSION := v0.8.2
GOBIN     := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck

ARM64_CC   := aarch64-linux-gnu-gcc
ARM64_ROOT := /usr/aarch64-linux-gnu
QEMU       := qemu-aarch64 -L $(ARM64_ROOT)

CFLAGS_TFLITE := -I$(TFLITE_DIR)/include -I$(ROOT)/cross/include
LDFLAGS_VERSION := -X main.version=$(VERSION)

# Tests link the runtime by absolute rpath; shipped binaries by $ORIGIN/lib.
HOST_TEST_ENV := CGO_ENABLED=1 CGO_CFLAGS="$(CFLAGS_TFLITE)" \
	CGO_LDFLAGS="-L$(TFLITE_LIB) -Wl,-rpath,$(TFLITE_LIB)"
HOST_BIN_ENV := CGO_ENABLED=1 CGO_CFLAGS="$(CFLAGS_TFLITE)" \
	CGO_LDFLAGS='-L$(TFLITE_LIB) -Wl,-rpath,$$ORIGIN/lib'
ARM64_TEST_ENV := CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(ARM64_CC) \
	CGO_CFLAGS="$(CFLAGS_TFLITE)" \
	CGO_LDFLAGS="-L$(TFLITE_LIB_ARM64) -Wl,-rpath,$(TFLITE_LIB_ARM64)"
ARM64_BIN_ENV := CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(ARM64_CC) \
	CGO_CFLAGS="$(CFLAGS_TFLITE)" \
	CGO_LDFLAGS='-L$(TFLITE_LIB_ARM64) -Wl,-rpath,$$ORIGIN/lib'

# Packages whose tests also run for linux/arm64 under qemu-user.
ARM64_PKGS := ./inference/... ./models/...

# Default models: trained on the simulator's normal data; `make models`
# rebuilds them byte for byte (on the same architecture).
MODEL_DATA := tmp/model-data
MODEL_RECIPE := \
	bin/vigil simulate pump -n 20000 -seed 1 -out $(MODEL_DATA)/pump.csv && \
	bin/vigil train -data $(MODEL_DATA)/pump.csv -window 60 -hop 10 -stride 4 -arch dense -seed 1 -reproducible -q -out $$OUT/pump8 && \
	bin/vigil simulate kiosk -n 30000 -seed 1 -out $(MODEL_DATA)/kiosk.jsonl && \
	bin/vigil train -events $(MODEL_DATA)/kiosk.jsonl -window 1 -hop 1 -seed 1 -quantile 0.999 -factor 1.2 -reproducible -q -out $$OUT/kiosk

.PHONY: help setup setup-demo setup-runtime build cross run models models-check fuzz-short test test-short test-race test-arm64 \
	lint fmt bench bench-watch clean selftest-arm64

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

setup: ## install what is missing: apt packages, the TFLite runtime, staticcheck
	@cross/setup.sh all
	@test -x $(STATICCHECK) || GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

setup-runtime:
	@cross/setup.sh runtime

# put_lib copies a shared library beside a binary only when it differs, and
# by rename: overwriting a mapped library in place crashes a running vigil.
put_lib = cmp -s $(1) $(2)/$(notdir $(1)) || { cp $(1) $(2)/.$(notdir $(1)).tmp && mv -f $(2)/.$(notdir $(1)).tmp $(2)/$(notdir $(1)); }

build: setup-runtime ## build bin/vigil for this machine, with its runtime in bin/lib
	@mkdir -p bin/lib
	@$(call put_lib,$(TFLITE_LIB)/libtensorflowlite_c.so,bin/lib)
	$(HOST_BIN_ENV) $(GO) build -trimpath -ldflags '$(LDFLAGS_VERSION)' -o bin/vigil ./agent

cross: setup ## build bin/linux-arm64/vigil, with its runtime in bin/linux-arm64/lib
	@mkdir -p bin/linux-arm64/lib
	@$(call put_lib,$(TFLITE_LIB_ARM64)/libtensorflowlite_c.so,bin/linux-arm64/lib)
	$(ARM64_BIN_ENV) $(GO) build -trimpath -ldflags '$(LDFLAGS_VERSION)' -o bin/linux-arm64/vigil ./agent

DEMO_CONFIG ?= agent/vigil.example.yaml

run: setup-demo build ## the demo: the simulator scored with the default models, alerts on stdout
	bin/vigil selftest
	bin/vigil check-config $(DEMO_CONFIG)
	cross/demo.sh $(DEMO_CONFIG)

# Only what the demo needs: the runtime (and npm to fetch it on a first run).
setup-demo:
	@cross/setup.sh demo

models: build ## regenerate the default models in models/ from simulator data
	@mkdir -p $(MODEL_DATA)
	OUT=models; $(MODEL_RECIPE)

models-check: build ## check that the committed default models rebuild byte for byte
	@mkdir -p $(MODEL_DATA) tmp/models-check
	OUT=tmp/models-check; $(MODEL_RECIPE) >/dev/null
	@for f in pump8.tflite pump8.json kiosk.tflite kiosk.json; do \
		cmp models/$$f tmp/models-check/$$f || { echo "models/$$f does not rebuild byte for byte"; exit 1; }; done
	@echo "default models rebuild byte for byte"

selftest-arm64: cross ## run the arm64 binary's selftest under qemu-user
	$(QEMU) bin/linux-arm64/vigil selftest

FUZZTIME ?= 5

fuzz-short: setup-runtime ## run every fuzz target for FUZZTIME seconds (5 in make test)
	$(HOST_TEST_ENV) cross/fuzz.sh $(FUZZTIME)

# Two jobs run in the background beside the rest, and `make test` waits for
# them at the end; both skip, saying so, when the SKAB data is not there:
# - the SKAB replay at real speed (agent/daemon/skabpath_test.go), which
#   lasts the recording's 20 minutes, mostly waiting on its clock;
# - the tests that learn models on the real data, without -race (under it
#   they skip: ten times slower, and no race to find in them).
SKAB_RT := tmp/skab-real-speed
SKAB_NR := tmp/skab-learning
SKAB_TESTS := ^(TestSKABValve1|TestConfidenceHeldOutSKAB|TestEnsembleSKAB|TestSKABReplayDecidesLikeEval)$$

test: setup ## everything CI runs
	@mkdir -p tmp
	@($(HOST_TEST_ENV) $(GO) test -race -c -o $(SKAB_RT).test ./agent/daemon && cd agent/daemon && \
	  VIGIL_SKAB_REAL_SPEED=1 exec $(ROOT)/$(SKAB_RT).test -test.run '^TestSKABReplayAtRealSpeedDecidesLikeEval$$' -test.v -test.timeout 40m) \
	  >$(SKAB_RT).log 2>&1 & bg=$$!; \
	($(HOST_TEST_ENV) exec $(GO) test -count=1 -v -timeout 30m -run '$(SKAB_TESTS)' ./agent/eval ./agent/daemon) \
	  >$(SKAB_NR).log 2>&1 & nr=$$!; \
	status=0; $(MAKE) --no-print-directory lint test-race test-arm64 selftest-arm64 fuzz-short dist-test || status=$$?; \
	if [ $$status -ne 0 ]; then kill $$bg $$nr 2>/dev/null || true; wait $$bg $$nr || true; exit $$status; fi; \
	echo "waiting for the SKAB tests that learn on the real data ($(SKAB_NR).log)"; \
	if ! wait $$nr; then echo "SKAB tests failed:"; cat $(SKAB_NR).log; kill $$bg 2>/dev/null || true; exit 1; fi; \
	grep -E '^(--- |ok|FAIL)' $(SKAB_NR).log; \
	echo "waiting for the SKAB replay at real speed ($(SKAB_RT).log)"; \
	if ! wait $$bg; then echo "SKAB replay at real speed failed:"; cat $(SKAB_RT).log; exit 1; fi; \
	grep -E '^--- |skabpath_test.go:' $(SKAB_RT).log
	@echo "make test: all passed"

test-short: setup-runtime ## the fast tier: go test -short
	$(HOST_TEST_ENV) $(GO) test -short -count=1 ./...

test-race: setup-runtime
	$(HOST_TEST_ENV) $(GO) test -race -count=1 -timeout 30m ./...

test-arm64: setup ## inference and models tests compiled for arm64, run under qemu
	$(ARM64_TEST_ENV) $(GO) test -count=1 -short -timeout 30m -exec '$(QEMU)' $(ARM64_PKGS)

lint: setup-runtime ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(HOST_TEST_ENV) $(GO) vet ./...
	$(HOST_TEST_ENV) $(STATICCHECK) ./...

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

bench: bench-report ## every package's benchmarks, the load test and arm64 instruction counts, in one table

WATCH_LOAD ?= 30

bench-watch: setup-runtime ## vigil watch fed by 1,000 simulated devices: its CPU, memory and publish-to-screen lag
	@mkdir -p tmp
	$(HOST_TEST_ENV) VIGIL_WATCH_LOAD=$(WATCH_LOAD) VIGIL_WATCH_LOAD_REPORT=$(ROOT)/tmp/watch-load.txt \
		$(GO) test -count=1 -run TestFleetLoad ./agent/watch
	@cat tmp/watch-load.txt

clean: ## remove build outputs (keeps the runtime cache)
	rm -rf bin dist

# Targets kept beside the code they drive: packaging, fault scenarios, and
# performance (load test, soak, benchmark report).
-include cross/dist/dist.mk
-include agent/internal/harness/chaos/chaos.mk
-include agent/internal/harness/perf/perf.mk
