// Command vigil is the Vigil edge anomaly-detection agent: it scores local
// sensor and user-behaviour streams with TensorFlow Lite models, keeps every
// score and alert in a durable local buffer, and publishes them over MQTT.
//
// This file is the thin main: it parses the subcommand and hands over to its
// function. The daemon itself is agent/daemon; the other subcommands' bodies
// are in agent/cli; the daemon's parts live in the other sub-packages of
// agent/.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigil-edge/vigil/agent/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one vigil subcommand.
type command struct {
	name, usage string
	run         func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"version", "print the version of vigil and of its TFLite runtime", runVersion},
		{"run", "run the agent: score the configured streams into the buffer, publish and forward", runRun},
		{"check-config", "report every problem of a config file with its key path", runCheckConfig},
		{"train", "fit an autoencoder to normal data and write NAME.tflite and NAME.json", runTrain},
		{"fleet", "manage devices over MQTT: deploy a signed model, show their models and thresholds", cli.Fleet},
		{"watch", "live view of every Vigil device under an MQTT topic prefix", cli.Watch},
		{"simulate", "write simulated pump samples (CSV) or kiosk events (JSONL)", cli.Simulate},
		{"eval", "run the SKAB benchmark protocol on labelled data through learning, TFLite and the detector", cli.Eval},
		{"selftest", "build a model in memory, run it through TFLite and check it against the Go reference", cli.Selftest(version)},
		{"model", "inspect a .tflite file, write its manifest (init), calibrate its threshold, keygen and sign", runModel},
		{"score", "score every window of a recorded CSV or JSONL file with a model, as the agent would", runScore},
		{"config", "config print [FILE]: the effective configuration, secrets redacted", runConfig},
		{"completion", "completion bash|zsh: a shell completion script", cli.Completion(commandNames)},
	}
}

// commandNames lists the subcommands, for the completion scripts.
func commandNames() []string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return names
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// dispatch runs one subcommand and returns the process exit code: 0 on success,
// 1 when the command failed, 2 for a usage error.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
			if err == errUsage {
				return 2
			}
			fmt.Fprintf(stderr, "vigil %s: %v\n", c.name, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "vigil: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: vigil <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun 'vigil <command> -h' for a command's flags.")
}
