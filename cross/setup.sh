#!/usr/bin/env bash
# cross/setup.sh — provision what Vigil needs to build and test for the host
# and for linux/arm64:
#   * the TensorFlow Lite 2.9.0 C runtime for linux_amd64 and linux_arm64,
#     taken from the npm package tfjs-tflite-node@0.0.2 (pinned by sha256) into
#     a git-ignored cache, unless TFLITE_DIR names a runtime you already have;
#   * Debian packages, installed only when missing: the aarch64 cross C
#     toolchain, libstdc++ for arm64, qemu-user, and what the tests run
#     against (mosquitto, its clients, a NATS server for the clustered-broker
#     tests, tmux for the terminal tests, and chromium for the browser test).
#
# Usage: cross/setup.sh [runtime|demo|apt|all]   (default: all)
#   runtime  the TFLite runtime only (needs npm on a first run)
#   demo     what `make run` needs: npm when the runtime is not cached yet,
#            then the runtime; no cross toolchain, qemu, mosquitto or chromium
#   apt      the Debian packages of the full build and test (all but runtime)
# Re-running is fast and offline once the cache is complete.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VIGIL_CACHE:-$here/.cache}
pkg=tfjs-tflite-node@0.0.2
tgz=tfjs-tflite-node-0.0.2.tgz
sha=3be1632328a76a2475e5b6833253763c802c859433becb4d879ee1860e3b5284
rt=$cache/tflite-2.9.0

log() { printf 'setup: %s\n' "$*" >&2; }

runtime() {
	if [ -n "${TFLITE_DIR:-}" ]; then
		for f in include/tensorflow/lite/c/c_api.h; do
			[ -e "$TFLITE_DIR/$f" ] || { log "TFLITE_DIR=$TFLITE_DIR has no $f"; exit 1; }
		done
		log "using the TFLite runtime in TFLITE_DIR=$TFLITE_DIR"
		return
	fi
	if [ -e "$rt/.complete" ]; then
		return
	fi
	command -v npm >/dev/null || { log "npm is needed to fetch $pkg (apt-get install npm)"; exit 1; }
	mkdir -p "$cache"
	if [ ! -e "$cache/$tgz" ] || ! echo "$sha  $cache/$tgz" | sha256sum -c --status; then
		log "fetching $pkg with npm pack"
		rm -f "$cache/$tgz"
		(cd "$cache" && npm pack --silent "$pkg" >/dev/null)
	fi
	if ! echo "$sha  $cache/$tgz" | sha256sum -c --status; then
		log "sha256 of $cache/$tgz is $(sha256sum "$cache/$tgz" | cut -d' ' -f1), want $sha: refusing to use it"
		rm -f "$cache/$tgz"
		exit 1
	fi
	tmp=$(mktemp -d "$cache/unpack.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	tar -xzf "$cache/$tgz" -C "$tmp" package/cc_deps
	rm -rf "$rt"
	mkdir -p "$rt/lib"
	cp -r "$tmp/package/cc_deps/include" "$rt/include"
	for a in amd64 arm64; do
		mkdir -p "$rt/lib/linux_$a"
		cp "$tmp/package/cc_deps/linux_$a/libtensorflowlite_c.so" "$rt/lib/linux_$a/"
	done
	touch "$rt/.complete"
	log "TFLite 2.9.0 runtime ready in $rt"
}

apt_install() {
	# package:command-or-file pairs; install only what is missing.
	local want=() p
	for spec in "$@"; do
		p=${spec%%:*}
		probe=${spec#*:}
		if [[ $probe == /* ]]; then [ -e "$probe" ] && continue; else command -v "$probe" >/dev/null && continue; fi
		want+=("$p")
	done
	[ ${#want[@]} -eq 0 ] && return
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing Debian packages: ${want[*]}"
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq >/dev/null
	$sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

apt() {
	apt_install \
		gcc-aarch64-linux-gnu:aarch64-linux-gnu-gcc \
		libstdc++6-arm64-cross:/usr/aarch64-linux-gnu/lib/libstdc++.so.6 \
		libc6-dev-arm64-cross:/usr/aarch64-linux-gnu/include/stdio.h \
		qemu-user:qemu-aarch64 \
		npm:npm \
		mosquitto:/usr/sbin/mosquitto \
		mosquitto-clients:mosquitto_sub \
		tmux:tmux \
		nats-server:/usr/sbin/nats-server \
		chromium:chromium
}

demo() {
	if [ -z "${TFLITE_DIR:-}" ] && [ ! -e "$rt/.complete" ]; then
		apt_install npm:npm
	fi
	runtime
}

case "${1:-all}" in
runtime) runtime ;;
demo) demo ;;
apt) apt ;;
all) apt; runtime ;;
*) log "usage: $0 [runtime|demo|apt|all]"; exit 2 ;;
esac
