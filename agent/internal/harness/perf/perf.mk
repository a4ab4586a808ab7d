# Performance: the load test, the soak, arm64 instruction counts and the
# one-table benchmark report. Included by the top-level Makefile; the
# drivers live in agent/internal/harness/perf (tests that run only when these targets pass
# their flags, so `make test` runs just their helpers' unit tests).
#
#   make loadtest                 the peer workload (LOADTEST_ARGS, e.g. -perf.phase 30s -perf.rates 1000,5000)
#   make soak DURATION=30m        the demo with periodic faults; plot and table in tmp/perf
#   make bench-report             every package's benchmarks + loadtest + bench-arm64, one table
#
# Results go to PERF_OUT (tmp/perf): bench.txt, load.json, arm64.json,
# report.md, soak.{png,csv,md} and each run's vigil log.

PERF_OUT ?= $(ROOT)/tmp/perf
DURATION ?= 30m
LOADTEST_ARGS ?=
PERF_TEST := $(HOST_TEST_ENV) $(GO) test -count=1 -v ./agent/internal/harness/perf
INSNCOUNT := $(PERF_OUT)/libinsncount.so

.PHONY: loadtest soak bench-go bench-arm64 bench-report

loadtest: build ## the peer workload: 1k–20k msg/s, the highest sustained rate, a broker outage, CPU at 100 samples/s
	@mkdir -p $(PERF_OUT)
	$(PERF_TEST) -timeout 2h -run '^TestLoad$$' -args -perf.load -perf.out $(PERF_OUT) $(LOADTEST_ARGS)

soak: build ## run the demo for DURATION (30m) with periodic faults; RSS/goroutines/files/disk plot and table
	@mkdir -p $(PERF_OUT)
	$(PERF_TEST) -timeout 0 -run '^TestSoak$$' -args -perf.soak $(DURATION) -perf.out $(PERF_OUT)

bench-go: setup-runtime ## every package's benchmarks, into tmp/perf/bench.txt
	@mkdir -p $(PERF_OUT)
	$(HOST_TEST_ENV) $(GO) test -run '^$$' -bench . -benchmem -timeout 2h ./... | tee $(PERF_OUT)/bench.txt

# Debian 12's qemu-user supports TCG plugins but ships none: build the
# small instruction counter in agent/internal/harness/perf/qemu, and the arm64 test
# binaries of inference and models/train.
bench-arm64: setup ## inference and training instruction counts for linux/arm64 under qemu-user
	@mkdir -p $(PERF_OUT)/arm64
	gcc -shared -fPIC -O2 -fvisibility=hidden -o $(INSNCOUNT) agent/internal/harness/perf/qemu/insncount.c
	$(ARM64_TEST_ENV) $(GO) test -c -o $(PERF_OUT)/arm64/inference.test ./inference
	$(ARM64_TEST_ENV) $(GO) test -c -o $(PERF_OUT)/arm64/train.test ./models/train
	$(PERF_TEST) -timeout 2h -run '^TestARM64Instructions$$' -args -perf.out $(PERF_OUT) \
		-perf.arm64.plugin $(INSNCOUNT) -perf.arm64.qemu '$(QEMU)' \
		-perf.arm64.inference $(PERF_OUT)/arm64/inference.test -perf.arm64.train $(PERF_OUT)/arm64/train.test

bench-report: bench-go loadtest bench-arm64 ## all of the above, then one table with every figure beside its target
	@$(PERF_TEST) -run '^TestBenchReport$$' -args -perf.report -perf.out $(PERF_OUT) | sed -n '/^# Vigil benchmark report/,/^report: /p'
