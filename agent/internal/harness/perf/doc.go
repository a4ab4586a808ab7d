// Package perf measures Vigil as a whole: the source-to-buffer benchmark
// with the default sensor model, the end-to-end load test shaped like the
// common edge stream-processing benchmark (JSON pump samples over MQTT in,
// scores over MQTT out), the soak run, and the one-table benchmark report
// that `make bench` prints.
//
// The drivers are tests and benchmarks that run only when asked for:
//
//	make bench-report   every package's benchmarks, the load test, arm64 instruction counts, one table
//	make loadtest       the load test alone (fixed rates, the highest sustained rate, a broker outage)
//	make soak DURATION=30m
//
// Each drives the real bin/vigil against real mosquitto brokers and reads
// the process's CPU time, RSS and open files from /proc and its counters
// from /metrics. The helpers here (the /proc and /metrics readers, the
// table, the PNG plot, the benchmark-output parser, least-squares slopes)
// are plain code with fast unit tests; nothing slow runs in `make test`.
package perf
