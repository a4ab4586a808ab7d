# Fault scenarios (agent/internal/harness/chaos): the real vigil binary against a real
# mosquitto behind a TCP proxy, and the Amplitude and Dify doubles. Each
# scenario checks that no accepted alert is lost, duplicates keep their id,
# order holds within a lane, RSS stays bounded, and measures the time to
# recover; the run prints one table row per scenario.
#
#   make chaos                 full run (VIGIL_CHAOS=full: longer faults, more kills)
#   make chaos-ci              the CI-sized run (the one `make test` runs under -race)
#   CHAOS_RUN=sigkill make chaos   one scenario (a regexp over scenario names)
#   CHAOS_ARGS='-chaos.seed=42'    repeat the fault moments of a run
#
# Both use bin/vigil (built by `make build`); the report is also written to
# tmp/chaos-report.txt.

CHAOS_RUN  ?= .
CHAOS_ARGS ?=
CHAOS_TEST  = $(HOST_TEST_ENV) VIGIL_CHAOS_BIN=$(ROOT)/bin/vigil VIGIL_CHAOS_REPORT=$(ROOT)/tmp/chaos-report.txt \
	$(GO) test -count=1 -v -run 'TestChaos/$(CHAOS_RUN)' ./agent/internal/harness/chaos

.PHONY: chaos chaos-ci

chaos: setup build ## fault scenarios, full size (prints the table; ~15 min)
	@mkdir -p tmp
	VIGIL_CHAOS=full $(CHAOS_TEST) -timeout 60m -args $(CHAOS_ARGS)
	@cat tmp/chaos-report.txt

chaos-ci: setup build ## fault scenarios, CI size (~3 min)
	@mkdir -p tmp
	$(CHAOS_TEST) -timeout 15m -args $(CHAOS_ARGS)
	@cat tmp/chaos-report.txt
