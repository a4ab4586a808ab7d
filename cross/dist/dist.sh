#!/usr/bin/env bash
# cross/dist/dist.sh — package the already-built vigil for devices: a .deb and
# a tarball (with install.sh for devices without dpkg) for linux/amd64 and
# linux/arm64, and their SHA256SUMS.
#
# Usage: cross/dist/dist.sh VERSION OUTDIR
#   VERSION  what `git describe --tags --always --dirty` says (v1.2.3,
#            v1.2.3-4-gabc1234, abc1234-dirty, dev); made into a Debian
#            version by deb_version below, which also names the files
#   OUTDIR   created if missing; receives vigil_<v>_{amd64,arm64}.deb,
#            vigil_<v>_linux_{amd64,arm64}.tar.gz and SHA256SUMS
#
# Inputs, built first by `make build cross` (on an amd64 host):
#   bin/vigil, bin/lib/libtensorflowlite_c.so                 → amd64
#   bin/linux-arm64/vigil, bin/linux-arm64/lib/libtensorflowlite_c.so → arm64
#   models/*.tflite, models/*.json    default models (optional, warned about)
#   cross/dist/vigil.yaml             the device config installed as /etc/vigil/vigil.yaml
#   agent/vigil.example.yaml          the demo config, as an example (optional)
#   cross/dist/{vigil.service,sysusers.conf,install.sh,deb/*}
#
# Layout of both packages (the tarball holds the same tree under
# vigil_<v>_linux_<arch>/ next to install.sh):
#   /usr/lib/vigil/vigil                       the binary; rpath $ORIGIN/lib
#   /usr/lib/vigil/lib/libtensorflowlite_c.so  its private TFLite runtime
#   /usr/bin/vigil -> ../lib/vigil/vigil       (the kernel resolves the link,
#                                              so $ORIGIN is /usr/lib/vigil)
#   /usr/share/vigil/models/                   default models
#   /etc/vigil/vigil.yaml                      the device config, cross/dist/vigil.yaml
#                                              (a conffile)
#   /usr/share/doc/vigil/demo.yaml             the demo's config with the package's paths
#   /lib/systemd/system/vigil.service          the hardened unit
#   /usr/lib/sysusers.d/vigil.conf             the vigil user for systemd-sysusers
#   /usr/share/bash-completion/completions/vigil, /usr/share/zsh/vendor-completions/_vigil
#   /usr/share/doc/vigil/                      copyright, LICENSE, NOTICE,
#                                              THIRD_PARTY_NOTICES.md, third-party
#                                              license texts, changelog
#
# Environment: VIGIL_MAINTAINER sets the Maintainer field; SOURCE_DATE_EPOCH
# (default: the time of the commit) sets every file time, so two runs over
# the same binaries give byte-identical packages.
#
# Needs: dpkg-deb, readelf (binutils), gzip, tar; go for the third-party
# license list (skipped with a warning without it). No fakeroot:
# dpkg-deb --root-owner-group and tar --owner=0 set root ownership.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)

log() { printf 'dist: %s\n' "$*" >&2; }
warn() { printf 'dist: warning: %s\n' "$*" >&2; }
die() { printf 'dist: %s\n' "$*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 VERSION OUTDIR"
raw_version=$1
outdir=$2
[ -n "$raw_version" ] || die "VERSION is empty"

for tool in dpkg-deb dpkg readelf gzip tar sha256sum md5sum; do
	command -v "$tool" >/dev/null || die "$tool is needed (apt-get install dpkg binutils)"
done

git_() { git -C "$top" "$@" 2>/dev/null; }

# deb_version turns a git describe into a valid Debian version that sorts the
# way the builds were made:
#   v1.2.3            → 1.2.3
#   v1.2.3-4-gabc1234 → 1.2.3+git4.abc1234          (after 1.2.3)
#   v1.3.0-rc.1       → 1.3.0~rc.1                  (before 1.3.0)
#   abc1234 (no tag)  → 0.0.0~git20251124171500.abc1234  (commit time, UTC,
#                       so untagged builds sort in commit order; without git:
#                       0.0.0~gitabc1234)
#   dev               → 0.0.0~dev
#   any of these with -dirty → ...+dirty
deb_version() {
	local v=${1#v} dirty='' base suffix='' when
	if [[ $v == *-dirty ]]; then
		v=${v%-dirty}
		dirty=+dirty
	fi
	if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		v=${BASH_REMATCH[1]}
		suffix=+git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}
	fi
	# A bare commit id: hex, and not all digits unless git knows the commit.
	if [[ -z $suffix && $v =~ ^[0-9a-f]{7,40}$ ]] &&
		{ [[ $v =~ [a-f] ]] || git_ rev-parse -q --verify "$v^{commit}" >/dev/null; }; then
		when=$(TZ=UTC git_ log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S "$v") || when=
		base=0.0.0~git${when:+$when.}$v
	elif [[ $v =~ ^[0-9] ]]; then
		# A semver pre-release (1.3.0-rc.1) sorts before its release in Debian
		# with ~; other characters Debian does not allow become dots.
		base=${v/-/\~}
		base=$(printf '%s' "$base" | tr -c 'A-Za-z0-9.+~' '.')
	else
		base=0.0.0~$(printf '%s' "$v" | tr -c 'A-Za-z0-9.+~' '.')
	fi
	printf '%s%s%s\n' "$base" "$suffix" "$dirty"
}

version=$(deb_version "$raw_version")
dpkg --validate-version "$version" 2>/dev/null || die "cannot make a Debian version from $raw_version (got $version)"
[[ $raw_version == *-dirty ]] && warn "packaging a dirty tree ($raw_version): commit first for a release"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git_ log -1 --format=%ct HEAD) || SOURCE_DATE_EPOCH=$(date +%s)
fi
export SOURCE_DATE_EPOCH
maintainer=${VIGIL_MAINTAINER:-Vigil maintainers <maintainers@vigil-edge.invalid>}

# ELF checks: each binary is for its architecture, finds the runtime through
# $ORIGIN/lib, and its shared-library needs map to Debian packages.
elf_machine() { readelf -hW "$1" | sed -n 's/^ *Machine: *//p'; }

check_inputs() { # arch bin lib machine
	local arch=$1 bin=$2 lib=$3 machine=$4 m
	if [ ! -x "$bin" ] || [ ! -f "$lib" ]; then
		die "$arch: ${bin#"$top"/} or ${lib#"$top"/} is missing: run \`make build cross\` first"
	fi
	for f in "$bin" "$lib"; do
		m=$(elf_machine "$f")
		[ "$m" = "$machine" ] || die "$arch: ${f#"$top"/} is for $m, want $machine: run \`make build cross\` on an amd64 host"
	done
	# shellcheck disable=SC2016 # a literal $ORIGIN
	grep -q 'R.*PATH.*\[\$ORIGIN/lib\]' <<<"$(readelf -dW "$bin")" ||
		die "$arch: ${bin#"$top"/} has no rpath \$ORIGIN/lib: build it with \`make build cross\`"
}

# symbols_floor PKG NODE: the least version of PKG providing the symbol
# version NODE (GLIBC_2.34 → 2.34), from the build host's dpkg symbols files;
# the node's versions are the same on every architecture.
symbols_floor() {
	local pkg=$1 node=$2 f v
	for f in /var/lib/dpkg/info/"$pkg":*.symbols /var/lib/dpkg/info/"$pkg".symbols; do
		[ -e "$f" ] || continue
		v=$(awk -v n="$node@$node" '$1 == n { print $2; exit }' "$f")
		[ -n "$v" ] && { echo "$v"; return; }
	done
	case $node in
	GLIBC_*) echo "${node#GLIBC_}" ;;
	*) die "no dpkg symbols file maps $node to a $pkg version: add it to symbols_floor in dist.sh" ;;
	esac
}

# depends FILE...: the Depends field for the given ELF files.
depends() {
	local n pkg node floor out=
	declare -A need=() least=()
	while read -r n; do
		case $n in
		libc.so.6 | libm.so.6 | libdl.so.2 | librt.so.1 | libpthread.so.0 | ld-linux-*.so.*) need[libc6]=1 ;;
		libstdc++.so.6) need[libstdc++6]=1 ;;
		libgcc_s.so.1) need[libgcc-s1]=1 ;;
		libtensorflowlite_c.so) ;;
		*) die "$n is needed by vigil but dist.sh does not know its Debian package: add it to depends()" ;;
		esac
	done < <(readelf -dW "$@" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort -u)
	while read -r node; do
		case $node in
		GLIBC_*) pkg=libc6 ;;
		GLIBCXX_* | CXXABI_*) pkg=libstdc++6 ;;
		GCC_*) pkg=libgcc-s1 ;;
		*) continue ;;
		esac
		floor=$(symbols_floor "$pkg" "$node")
		if [ -z "${least[$pkg]:-}" ] || dpkg --compare-versions "$floor" gt "${least[$pkg]}"; then
			least[$pkg]=$floor
		fi
	done < <(readelf -VW "$@" | grep -oE 'Name: (GLIBC|GLIBCXX|CXXABI|GCC)_[0-9.]+' | sed 's/^Name: //' | sort -u)
	for pkg in libc6 libgcc-s1 libstdc++6; do
		[ -n "${need[$pkg]:-}" ] || continue
		out+="${out:+, }$pkg${least[$pkg]:+ (>= ${least[$pkg]})}"
	done
	# postinst creates the vigil user with adduser.
	echo "$out, adduser"
}

# The packaged config: the example with the package's paths. The demo's
# relative data_dir and models_dir would point into /etc.
packaged_config() { # src dst
	{
		cat <<-'EOF'
			# Vigil configuration, installed by the vigil package from
			# agent/vigil.example.yaml with data_dir and models_dir set to the
			# package's paths. Check it with `vigil check-config /etc/vigil/vigil.yaml`.
			#
			# Set device_id and the sources and streams of this device; as
			# shipped it runs the demo (a simulated pump and kiosk), serves HTTP
			# on 127.0.0.1:8787 and runs an embedded MQTT broker on
			# 127.0.0.1:1883. With a mosquitto (or any broker) on this device,
			# set mqtt.broker and set mqtt.embedded_broker.listen to "" below,
			# or the two collide on port 1883. Put secrets and per-device values in
			# /etc/vigil/vigil.env (root, mode 0600), e.g.
			#   VIGIL_DEVICE_ID=pump-17
			#   VIGIL_MQTT_BROKER=ssl://broker.example.com:8883
			#   VIGIL_AMPLITUDE_API_KEY=...
			# and run `systemctl restart vigil`. vigil.service sets
			# VIGIL_DATA_DIR=/var/lib/vigil (its StateDirectory, the one place
			# its sandbox may write), which wins over data_dir here.

		EOF
		# (and without the example's note on where the demo keeps its data)
		sed -e 's|^data_dir:.*|data_dir: /var/lib/vigil|' \
			-e 's|^models_dir:.*|models_dir: /usr/share/vigil/models|' \
			-e 's|^\(# Default /var/lib/vigil\. Env VIGIL_DATA_DIR\.\) The demo keeps it in the$|\1|' \
			-e "/^# repository's git-ignored tmp\/\.$/d" "$1"
	} >"$2"
	grep -qx 'data_dir: /var/lib/vigil' "$2" || warn "the example config has no top-level data_dir: line; left as is"
	grep -qx 'models_dir: /usr/share/vigil/models' "$2" || warn "the example config has no top-level models_dir: line; left as is"
}

# licenses BIN DST: the full license texts of what is linked into the
# package: the Go standard library and every Go module in the binary's build
# information (from the module cache), and the TFLite runtime (Apache-2.0).
licenses() {
	local bin=$1 dst=$2 gomodcache goroot kind path ver rest dir lic found
	{
		echo "Third-party software in the vigil package, with its license texts."
		echo "The Go code is linked statically into /usr/lib/vigil/vigil; the"
		echo "TensorFlow Lite runtime is /usr/lib/vigil/lib/libtensorflowlite_c.so."
	} >"$dst"
	section() { printf '\n\n==== %s ====\n\n' "$1" >>"$dst"; }
	section "TensorFlow Lite 2.9.0 C runtime (from the npm package tfjs-tflite-node 0.0.2) — Apache-2.0"
	echo "Copyright The TensorFlow Authors." >>"$dst"
	if [ -r /usr/share/common-licenses/Apache-2.0 ]; then
		echo >>"$dst"
		cat /usr/share/common-licenses/Apache-2.0 >>"$dst"
	else
		echo "License text: https://www.apache.org/licenses/LICENSE-2.0" >>"$dst"
	fi
	if ! command -v go >/dev/null; then
		warn "go not found: the Go modules' licenses are not listed in $(basename "$dst")"
		return
	fi
	gomodcache=$(go env GOMODCACHE)
	goroot=$(go env GOROOT)
	section "The Go standard library and runtime ($(go version "$bin" | awk '{print $2}')) — BSD-3-Clause"
	cat "$goroot/LICENSE" >>"$dst"
	while read -r kind path ver rest; do
		[ "$kind" = dep ] || continue
		[[ $rest == *'=>'* ]] && warn "$path is replaced; its license is taken from $path@$ver"
		# The module cache escapes upper-case letters as !lower.
		dir=$gomodcache/$(printf '%s' "$path" | sed 's/[A-Z]/!\L&/g')@$ver
		found=
		for lic in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING*; do
			[ -f "$lic" ] || continue
			section "Go module $path $ver"
			cat "$lic" >>"$dst"
			found=1
			break
		done
		[ -n "$found" ] || warn "no license file for Go module $path $ver in $dir"
	done < <(go version -m "$bin")
}

copyright() { # dst
	local lic=
	for f in LICENSE LICENSE.md LICENSE.txt COPYING; do
		[ -f "$top/$f" ] && { lic=$top/$f; break; }
	done
	{
		cat <<-'EOF'
			Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
			Upstream-Name: vigil
			Source: https://github.com/vigil-edge/vigil
			Comment: The full license texts of the bundled third-party software
			 (TensorFlow Lite runtime, Go standard library, Go modules) are in
			 /usr/share/doc/vigil/third-party-licenses.txt.

			Files: *
		EOF
		echo "Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) The Vigil authors"
		if [ -n "$lic" ] && grep -q 'Apache License' "$lic" && grep -q 'Version 2.0' "$lic"; then
			echo "License: Apache-2.0"
			echo " On Debian systems the full text of the Apache License 2.0 is in"
			echo " /usr/share/common-licenses/Apache-2.0; it is also in"
			echo " /usr/share/doc/vigil/LICENSE. See /usr/share/doc/vigil/NOTICE."
		elif [ -n "$lic" ]; then
			echo "License: $(grep -m1 . "$lic" | sed 's/^[[:space:]]*//' | tr -d '\r')"
			sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$lic"
		else
			echo "License: UNDECIDED"
			echo " The project has not published a license yet."
		fi
		cat <<-'EOF'

			Files: usr/lib/vigil/lib/libtensorflowlite_c.so
			Copyright: 2019-2022 The TensorFlow Authors
			License: Apache-2.0
			 On Debian systems the full text of the Apache License 2.0 is in
			 /usr/share/common-licenses/Apache-2.0; it is also in
			 /usr/share/doc/vigil/third-party-licenses.txt.
		EOF
	} >"$1"
}

changelog() { # dst.gz
	local date commit
	date=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
	commit=$(git_ rev-parse HEAD) || commit=unknown
	printf 'vigil (%s) stable; urgency=medium\n\n  * Built from %s (commit %s).\n\n -- %s  %s\n' \
		"$version" "$raw_version" "$commit" "$maintainer" "$date" | gzip -9n >"$1"
}

# strip_binary ARCH FILE drops the DWARF and symbol tables (a third of the
# size) as Debian packages do. Go's stack traces, panics and the goroutine
# dump on a watchdog abort use the runtime's own tables and stay symbolised;
# bin/ keeps the unstripped build for debugging.
strip_binary() {
	local tool=strip
	[ "$1" = arm64 ] && tool=aarch64-linux-gnu-strip
	if command -v "$tool" >/dev/null; then
		"$tool" --strip-unneeded "$2"
	else
		warn "$tool not found: the $1 binary ships unstripped"
	fi
}

# stage ARCH BIN LIB DIR: the installed tree, as root would see it.
stage() {
	local arch=$1 bin=$2 lib=$3 d=$4 f
	install -d -m 0755 "$d"/usr/lib/vigil/lib "$d"/usr/bin "$d"/usr/share/vigil/models \
		"$d"/usr/share/doc/vigil "$d"/lib/systemd/system "$d"/usr/lib/sysusers.d
	install -m 0755 "$bin" "$d"/usr/lib/vigil/vigil
	strip_binary "$arch" "$d"/usr/lib/vigil/vigil
	install -m 0644 "$lib" "$d"/usr/lib/vigil/lib/libtensorflowlite_c.so
	ln -s ../lib/vigil/vigil "$d"/usr/bin/vigil
	for f in "${models[@]}"; do
		install -m 0644 "$f" "$d"/usr/share/vigil/models/
	done
	# The device config (cross/dist/vigil.yaml): the local broker's sensors/#,
	# no simulator, no embedded broker. The demo's config ships as an example.
	install -d -m 0755 "$d"/etc/vigil
	install -m 0644 "$here/vigil.yaml" "$d"/etc/vigil/vigil.yaml
	if [ -f "$top/agent/vigil.example.yaml" ]; then
		packaged_config "$top/agent/vigil.example.yaml" "$d"/usr/share/doc/vigil/demo.yaml
		chmod 0644 "$d"/usr/share/doc/vigil/demo.yaml
	fi
	# Shell completions: the same script on every architecture, so the host
	# binary writes them.
	install -d -m 0755 "$d"/usr/share/bash-completion/completions "$d"/usr/share/zsh/vendor-completions
	"$top/bin/vigil" completion bash >"$d"/usr/share/bash-completion/completions/vigil ||
		die "bin/vigil completion bash failed: run \`make build\` first"
	"$top/bin/vigil" completion zsh >"$d"/usr/share/zsh/vendor-completions/_vigil
	chmod 0644 "$d"/usr/share/bash-completion/completions/vigil "$d"/usr/share/zsh/vendor-completions/_vigil
	install -m 0644 "$here/vigil.service" "$d"/lib/systemd/system/vigil.service
	install -m 0644 "$here/sysusers.conf" "$d"/usr/lib/sysusers.d/vigil.conf
	copyright "$d"/usr/share/doc/vigil/copyright
	licenses "$bin" "$d"/usr/share/doc/vigil/third-party-licenses.txt
	"$here/notices_check.sh" "$bin" >/dev/null || die "THIRD_PARTY_NOTICES.md misses a module linked into ${bin#"$top"/}"
	for f in LICENSE NOTICE THIRD_PARTY_NOTICES.md; do
		install -m 0644 "$top/$f" "$d"/usr/share/doc/vigil/
	done
	changelog "$d"/usr/share/doc/vigil/changelog.gz
	chmod 0644 "$d"/usr/share/doc/vigil/*
}

build_deb() { # arch stagedir out
	local arch=$1 d=$2 out=$3 size
	install -d -m 0755 "$d/DEBIAN"
	size=$(du -sk --exclude=./DEBIAN "$d" | cut -f1)
	cat >"$d/DEBIAN/control" <<-EOF
		Package: vigil
		Version: $version
		Architecture: $arch
		Maintainer: $maintainer
		Installed-Size: $size
		Depends: $(depends "$d"/usr/lib/vigil/vigil "$d"/usr/lib/vigil/lib/libtensorflowlite_c.so)
		Section: net
		Priority: optional
		Homepage: https://github.com/vigil-edge/vigil
		Description: edge anomaly detection for sensor and user-behaviour streams
		 Vigil is a small daemon for edge devices (pump controllers, gateways,
		 kiosks). It reads sensor streams (MQTT, CSV/JSONL replay, a simulator)
		 and user-behaviour events, scores windows of them with TensorFlow Lite
		 models, keeps every score and alert in a durable, byte-capped local
		 buffer and publishes them over MQTT; it can forward alerts to Amplitude
		 and ask a Dify workflow for advice.
		 .
		 The package brings its own TensorFlow Lite 2.9 C runtime in
		 /usr/lib/vigil/lib and runs vigil as a sandboxed systemd service under
		 the vigil system user.
	EOF
	if [ -f "$d/etc/vigil/vigil.yaml" ]; then
		echo /etc/vigil/vigil.yaml >"$d/DEBIAN/conffiles"
		chmod 0644 "$d/DEBIAN/conffiles"
	fi
	install -m 0755 "$here"/deb/postinst "$here"/deb/prerm "$here"/deb/postrm "$d/DEBIAN/"
	# md5sums of the files dpkg --verify checks (conffiles have their own).
	(cd "$d" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
		LC_ALL=C sort -z | xargs -0 md5sum) >"$d/DEBIAN/md5sums"
	chmod 0644 "$d/DEBIAN/control" "$d/DEBIAN/md5sums"
	find "$d" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group -Zxz --build "$d" "$out" >/dev/null
	log "built $(basename "$out"): Depends: $(sed -n 's/^Depends: //p' "$d/DEBIAN/control")"
}

build_tar() { # arch stagedir out
	local arch=$1 d=$2 out=$3 name
	name=$(basename "$out" .tar.gz)
	local t=$work/tar-$arch/$name
	install -d -m 0755 "$t"
	(cd "$d" && tar --exclude=./DEBIAN -cf - .) | (cd "$t" && tar -xf -)
	install -m 0755 "$here/install.sh" "$t/install.sh"
	echo "$arch" >"$t/ARCH"
	chmod 0644 "$t/ARCH"
	find "$t" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
		--format=gnu -C "$work/tar-$arch" -cf - "$name" | gzip -9n >"$out"
	log "built $(basename "$out")"
}

# --- main -------------------------------------------------------------------

check_inputs amd64 "$top/bin/vigil" "$top/bin/lib/libtensorflowlite_c.so" "Advanced Micro Devices X86-64"
check_inputs arm64 "$top/bin/linux-arm64/vigil" "$top/bin/linux-arm64/lib/libtensorflowlite_c.so" AArch64
# Both binaries should be one build of one tree, the one VERSION names.
if [ "$(uname -m)" = x86_64 ]; then
	for b in bin/vigil bin/linux-arm64/vigil; do
		run=()
		[ $b = bin/linux-arm64/vigil ] && run=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
		[ ${#run[@]} -eq 0 ] || command -v "${run[0]}" >/dev/null || continue
		built=$("${run[@]}" "$top/$b" version 2>&1) || die "$b does not run: $built"
		[[ $built == "vigil $raw_version "* ]] ||
			warn "$b says \"$built\", not version $raw_version: rebuild with \`make build cross\`"
	done
fi
if command -v go >/dev/null &&
	! cmp -s <(go version -m "$top/bin/vigil" | grep -P '^\tdep\t') <(go version -m "$top/bin/linux-arm64/vigil" | grep -P '^\tdep\t'); then
	warn "bin/vigil and bin/linux-arm64/vigil link different Go modules: one is stale; rebuild with \`make build cross\`"
fi

shopt -s nullglob
models=("$top"/models/*.tflite "$top"/models/*.json)
shopt -u nullglob
if [ ${#models[@]} -eq 0 ]; then
	warn "no default models (models/*.tflite, models/*.json): /usr/share/vigil/models is empty"
fi
if [ -f "$top/agent/vigil.example.yaml" ]; then
	# Models the example config's streams name, which vigil.service would need.
	while read -r m; do
		if [ ! -f "$top/models/$m.tflite" ] || [ ! -f "$top/models/$m.json" ]; then
			warn "the example config's model $m is not in models/ ($m.tflite, $m.json): check-config will fail until it ships"
		fi
	done < <(sed -n 's/^[[:space:]]*model:[[:space:]]*\([A-Za-z0-9._-]*\).*/\1/p' "$top/agent/vigil.example.yaml" | sort -u)
else
	warn "agent/vigil.example.yaml not found: the packages carry no /etc/vigil/vigil.yaml"
fi

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vigil-dist.XXXXXX")
trap 'rm -rf "$work"' EXIT

[ -f "$top/LICENSE" ] || [ -f "$top/LICENSE.md" ] || [ -f "$top/LICENSE.txt" ] || [ -f "$top/COPYING" ] ||
	warn "no LICENSE file at the top of the repository: the copyright files say License: UNDECIDED"

# The two architectures in parallel: compressing is most of the time.
files=() pids=()
for arch in amd64 arm64; do
	if [ "$arch" = amd64 ]; then src=$top/bin; else src=$top/bin/linux-arm64; fi
	rm -f "$outdir/vigil_${version}_$arch.deb" "$outdir/vigil_${version}_linux_$arch.tar.gz" "$outdir/SHA256SUMS"
	(
		d=$work/root-$arch
		stage "$arch" "$src/vigil" "$src/lib/libtensorflowlite_c.so" "$d"
		build_deb "$arch" "$d" "$outdir/vigil_${version}_$arch.deb"
		build_tar "$arch" "$d" "$outdir/vigil_${version}_linux_$arch.tar.gz"
	) &
	pids+=($!)
	files+=("vigil_${version}_$arch.deb" "vigil_${version}_linux_$arch.tar.gz")
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ $failed -eq 0 ] || die "packaging failed"
(cd "$outdir" && sha256sum "${files[@]}" >SHA256SUMS)
log "version $version ($raw_version) in $outdir:"
(cd "$outdir" && ls -l "${files[@]}" SHA256SUMS) >&2
