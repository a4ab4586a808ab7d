#!/usr/bin/env bash
# cross/dist/dist_test.sh — the packaging test: builds the packages with
# dist.sh into a temporary folder and checks what a device would get.
#
# Usage: cross/dist/dist_test.sh [VERSION]
#   VERSION defaults to `git describe --tags --always --dirty`, as in the
#   Makefile; bin/ must hold that build (`make build cross`).
#   KEEP=1 keeps the temporary folder and prints its path.
#
# Checks, one summary line each, then "N passed, M failed" (exit 1 on any
# failure; a check whose tool is missing is skipped and said so):
#   - dist.sh builds the four files and SHA256SUMS, which verifies;
#   - names, Debian versions, control fields, conffiles, maintainer scripts;
#   - modes and owners of every file in both .debs, the /usr/bin/vigil link;
#   - the config the package installs, with its default models, passes
#     `vigil check-config`; the unit passes `systemd-analyze verify`;
#   - ELF: architecture, rpath $ORIGIN/lib, no executable stack;
#   - the amd64 package's vigil runs `selftest` from a throwaway root, also
#     through the /usr/bin/vigil link, with libtensorflowlite_c.so resolved
#     inside that root; the arm64 package's under qemu-aarch64;
#   - `vigil run` from the root tells NOTIFY_SOCKET READY=1 and WATCHDOG=1,
#     survives SIGHUP (ExecReload) and exits 0 on SIGTERM (if it has `run`);
#   - under strace: no writable+executable mapping (MemoryDenyWriteExecute)
#     and no syscall outside the unit's SystemCallFilter, in selftest and run;
#   - each tarball holds the .deb's tree plus install.sh, and install.sh
#     installs, keeps an edited config, uninstalls and purges in a root;
#   - dpkg installs, upgrades, removes and purges the amd64 .deb in a
#     throwaway root (--force-script-chrootless: maintainer scripts run for
#     real against that root, never the host's);
#   - chroot into that dpkg-installed root (as root; skipped otherwise): as
#     the vigil user the postinst made, check-config on /etc/vigil/vigil.yaml
#     as installed, selftest, and `vigil run` with the unit's Environment=
#     for a few seconds, writing into /var/lib/vigil, exit 0 on SIGTERM;
#   - lintian: errors fail, warnings are listed (skipped without lintian).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
raw_version=${1:-$(git -C "$top" describe --tags --always --dirty 2>/dev/null || echo dev)}
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)

w=$(mktemp -d "${TMPDIR:-/tmp}/vigil-dist-test.XXXXXX")
cleanup() {
	if [ "${KEEP:-}" = 1 ]; then echo "kept $w"; else rm -rf "$w"; fi
}
trap cleanup EXIT

pass=0 failed=0 skipped=0
# check NAME CMD...: runs CMD (a function of this file) in a subshell with
# its output in a log; prints PASS (and the log's "note:" lines), FAIL with
# the log's last lines, or SKIP when CMD exits 77 (skip).
check() {
	local name=$1 rc=0 log t0=$SECONDS
	shift
	log=$w/log.$((pass + failed + skipped))
	# A subshell with errexit: the first failing command ends the check.
	set +e
	(
		set -e
		"$@"
	) >"$log" 2>&1
	rc=$?
	set -e
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1))
		printf 'PASS  %-3s %s\n' "$((SECONDS - t0))s" "$name"
		grep '^note: ' "$log" | sed 's/^note: /            /' || true
	elif [ $rc -eq 77 ]; then
		skipped=$((skipped + 1))
		printf 'SKIP  %-3s %s: %s\n' "$((SECONDS - t0))s" "$name" "$(tail -n1 "$log")"
	else
		failed=$((failed + 1))
		printf 'FAIL  %-3s %s\n' "$((SECONDS - t0))s" "$name"
		tail -n 15 "$log" | sed 's/^/            /'
	fi
}
fail() { echo "$*"; exit 1; }
# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	echo 18830
}
skip() { echo "$*"; exit 77; }
note() { echo "note: $*"; }

out=$w/out
# --- build ------------------------------------------------------------------

t_build() {
	"$here/dist.sh" "$raw_version" "$out" 2>"$w/dist.err" || { cat "$w/dist.err"; return 1; }
	grep 'warning:' "$w/dist.err" | sed 's/^dist: warning: /note: dist.sh: /' || true
	version=$(sed -n 's/^dist: version \([^ ]*\) .*/\1/p' "$w/dist.err")
	[ -n "$version" ] || fail "dist.sh did not say the version"
}
check "dist.sh $raw_version builds the packages" t_build
# check runs its command in this shell, so t_build's $version is set here.
version=$(sed -n 's/^dist: version \([^ ]*\) .*/\1/p' "$w/dist.err" 2>/dev/null || true)
if [ -z "$version" ]; then
	echo "$pass passed, $((failed + 1)) failed"
	exit 1
fi
deb_amd64=$out/vigil_${version}_amd64.deb
deb_arm64=$out/vigil_${version}_arm64.deb
tar_amd64=$out/vigil_${version}_linux_amd64.tar.gz
tar_arm64=$out/vigil_${version}_linux_arm64.tar.gz

t_sums() {
	local want
	want=$(printf '%s\n' "${deb_amd64##*/}" "${tar_amd64##*/}" "${deb_arm64##*/}" "${tar_arm64##*/}" | sort)
	[ "$(awk '{print $2}' "$out/SHA256SUMS" | sort)" = "$want" ] || fail "SHA256SUMS lists $(awk '{print $2}' "$out/SHA256SUMS")"
	(cd "$out" && sha256sum --strict -c SHA256SUMS)
}
check "SHA256SUMS lists the four files and verifies" t_sums

t_control() {
	local arch deb f v
	for arch in amd64 arm64; do
		deb=$out/vigil_${version}_$arch.deb
		[ "$(dpkg-deb -f "$deb" Package)" = vigil ] || fail "$arch: Package"
		[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "$arch: Version"
		[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$arch: Architecture"
		for f in Maintainer Depends Section Priority Description Installed-Size; do
			[ -n "$(dpkg-deb -f "$deb" "$f")" ] || fail "$arch: no $f"
		done
		v=$(dpkg-deb -f "$deb" Depends)
		[[ $v == *"libc6 (>= "* && $v == *libstdc++6* && $v == *adduser* ]] || fail "$arch: Depends: $v"
		rm -rf "$w/ctl-$arch" && dpkg-deb -e "$deb" "$w/ctl-$arch"
		[ "$(cat "$w/ctl-$arch/conffiles")" = /etc/vigil/vigil.yaml ] || fail "$arch: conffiles: $(cat "$w/ctl-$arch/conffiles")"
		for f in postinst prerm postrm; do
			[ "$(stat -c %a "$w/ctl-$arch/$f")" = 755 ] || fail "$arch: $f is not 0755"
			sh -n "$w/ctl-$arch/$f" || fail "$arch: $f: sh -n"
			cmp -s "$w/ctl-$arch/$f" "$here/deb/$f" || fail "$arch: $f differs from cross/dist/deb/$f"
		done
		note "$arch: Depends: $v"
	done
	dpkg --compare-versions "$version" gt 0 || fail "version $version"
}
check "control: fields, Depends, conffiles, maintainer scripts" t_control

# listing ARCH: "mode owner path[ -> target]" for every entry of the .deb.
listing() {
	dpkg-deb -c "$out/vigil_${version}_$1.deb" | awk '{ p = $6; for (i = 7; i <= NF; i++) p = p " " $i; print $1, $2, p }'
}
t_modes() {
	local arch l
	for arch in amd64 arm64; do
		l=$(listing "$arch")
		echo "$l" | awk '$2 != "root/root" { bad = 1; print "not root/root: " $0 } END { exit bad }' || fail "$arch: owners"
		echo "$l" | awk 'substr($1, 9, 1) == "w" && substr($1, 1, 1) != "l" { bad = 1; print "world-writable: " $0 } END { exit bad }' || fail "$arch: modes"
		echo "$l" | awk '$1 ~ /^d/ && $1 != "drwxr-xr-x" { bad = 1; print "directory mode: " $0 } END { exit bad }' || fail "$arch: directory modes"
		for want in \
			"-rwxr-xr-x root/root ./usr/lib/vigil/vigil" \
			"-rw-r--r-- root/root ./usr/lib/vigil/lib/libtensorflowlite_c.so" \
			"lrwxrwxrwx root/root ./usr/bin/vigil -> ../lib/vigil/vigil" \
			"-rw-r--r-- root/root ./etc/vigil/vigil.yaml" \
			"-rw-r--r-- root/root ./lib/systemd/system/vigil.service" \
			"-rw-r--r-- root/root ./usr/lib/sysusers.d/vigil.conf" \
			"-rw-r--r-- root/root ./usr/share/doc/vigil/copyright" \
			"-rw-r--r-- root/root ./usr/share/doc/vigil/changelog.gz" \
			"-rw-r--r-- root/root ./usr/share/doc/vigil/third-party-licenses.txt" \
			"-rw-r--r-- root/root ./usr/share/doc/vigil/LICENSE" \
			"-rw-r--r-- root/root ./usr/share/doc/vigil/NOTICE" \
			"-rw-r--r-- root/root ./usr/share/doc/vigil/THIRD_PARTY_NOTICES.md" \
			"-rw-r--r-- root/root ./usr/share/bash-completion/completions/vigil" \
			"-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_vigil"; do
			grep -qxF -- "$want" <<<"$l" || fail "$arch: missing: $want"
		done
		# Everything else installed is a plain 0644 file (models) or a directory.
		echo "$l" | awk '$1 !~ /^d/ && $1 != "-rw-r--r--" && $3 != "./usr/lib/vigil/vigil" && $3 != "./usr/bin/vigil" { bad = 1; print "unexpected: " $0 } END { exit bad }' || fail "$arch: unexpected modes"
	done
}
check "file modes and owners in both .debs; /usr/bin/vigil -> ../lib/vigil/vigil" t_modes

r86=$w/root-amd64 r64=$w/root-arm64
dpkg-deb -x "$deb_amd64" "$r86"
dpkg-deb -x "$deb_arm64" "$r64"

t_tree() {
	local f n=0
	[ "$(readlink -f "$r86/usr/bin/vigil")" = "$r86/usr/lib/vigil/vigil" ] || fail "usr/bin/vigil does not resolve to usr/lib/vigil/vigil in the root"
	cmp "$r86/lib/systemd/system/vigil.service" "$here/vigil.service" || fail "the unit differs from cross/dist/vigil.service"
	shopt -s nullglob
	for f in "$top"/models/*.tflite "$top"/models/*.json; do
		cmp "$f" "$r86/usr/share/vigil/models/${f##*/}" || fail "model ${f##*/} not shipped as is"
		cmp "$f" "$r64/usr/share/vigil/models/${f##*/}" || fail "arm64: model ${f##*/} not shipped as is"
		n=$((n + 1))
	done
	shopt -u nullglob
	if [ $n -gt 0 ]; then note "$n default model files shipped"; else note "no default models in models/ (warned by dist.sh)"; fi
	grep -qx 'data_dir: /var/lib/vigil' "$r86/etc/vigil/vigil.yaml" || fail "config: data_dir"
	grep -qx 'models_dir: /usr/share/vigil/models' "$r86/etc/vigil/vigil.yaml" || fail "config: models_dir"
}
check "tree: link resolves in the root, unit, default models, config paths" t_tree

t_check_config() {
	mkdir -p "$w/state"
	# The package's paths, moved into the throwaway root.
	env VIGIL_MODELS_DIR="$r86/usr/share/vigil/models" VIGIL_DATA_DIR="$w/state" \
		"$r86/usr/bin/vigil" check-config "$r86/etc/vigil/vigil.yaml"
}
check "the packaged config with the packaged models passes vigil check-config" t_check_config

t_unit() {
	command -v systemd-analyze >/dev/null || skip "no systemd-analyze"
	mkdir -p "$w/unit"
	# verify wants ExecStart's binary to exist: point it into the root.
	sed "s|/usr/bin/vigil|$r86/usr/bin/vigil|g" "$r86/lib/systemd/system/vigil.service" >"$w/unit/vigil.service"
	systemd-analyze verify "$w/unit/vigil.service"
	note "$(systemd-analyze security --offline=yes "$w/unit/vigil.service" 2>/dev/null | tail -n1 | sed 's/^→ //')"
}
check "systemd-analyze verify vigil.service" t_unit

t_elf() {
	local f m want
	for f in "$r86"/usr/lib/vigil/vigil "$r86"/usr/lib/vigil/lib/libtensorflowlite_c.so \
		"$r64"/usr/lib/vigil/vigil "$r64"/usr/lib/vigil/lib/libtensorflowlite_c.so; do
		want="Advanced Micro Devices X86-64"
		[[ $f == "$r64"/* ]] && want=AArch64
		m=$(readelf -hW "$f" | sed -n 's/^ *Machine: *//p')
		[ "$m" = "$want" ] || fail "${f#"$w"/}: machine $m, want $want"
		# An executable stack would make glibc mprotect the stack PROT_EXEC,
		# which MemoryDenyWriteExecute refuses.
		readelf -lW "$f" | awk '/GNU_STACK/ { found = 1; if ($7 ~ /E/) exit 1 } END { exit !found }' ||
			fail "${f#"$w"/}: executable or unmarked stack"
	done
	for f in "$r86"/usr/lib/vigil/vigil "$r64"/usr/lib/vigil/vigil; do
		# shellcheck disable=SC2016 # a literal $ORIGIN
		grep -q 'R.*PATH.*\[\$ORIGIN/lib\]' <<<"$(readelf -dW "$f")" || fail "${f#"$w"/}: no rpath \$ORIGIN/lib"
	done
}
check "ELF: architectures, rpath \$ORIGIN/lib, no executable stack" t_elf

t_ldd() {
	local line
	line=$(env -u LD_LIBRARY_PATH ldd "$r86/usr/lib/vigil/vigil" | grep libtensorflowlite_c.so) || fail "ldd lists no libtensorflowlite_c.so"
	echo "$line"
	[[ $line == *"=> $r86/usr/lib/vigil/lib/libtensorflowlite_c.so "* ]] || fail "resolved outside the root: $line"
	! env -u LD_LIBRARY_PATH ldd "$r86/usr/lib/vigil/vigil" | grep 'not found' || fail "unresolved libraries"
}
check "ldd: libtensorflowlite_c.so resolves inside the package root" t_ldd

# selftest PATH...: runs vigil selftest from / with a clean library path.
selftest() {
	local o
	o=$(cd / && env -u LD_LIBRARY_PATH "$@" selftest 2>&1) || { echo "$o"; return 1; }
	echo "$o"
	grep -q 'selftest passed' <<<"$o"
}
t_selftest_amd64() {
	selftest "$r86/usr/lib/vigil/vigil"
	# The version the package carries is the one that was asked for.
	local v
	v=$("$r86/usr/lib/vigil/vigil" version)
	[[ $v == "vigil $raw_version "* ]] || fail "vigil version says $v, want $raw_version (bin/ rebuilt meanwhile?)"
}
check "amd64: <root>/usr/lib/vigil/vigil selftest" t_selftest_amd64
check "amd64: <root>/usr/bin/vigil selftest (through the link)" selftest "$r86/usr/bin/vigil"

t_selftest_arm64() {
	command -v "${qemu[0]}" >/dev/null || skip "no qemu-aarch64"
	selftest "${qemu[@]}" "$r64/usr/lib/vigil/vigil"
	selftest "${qemu[@]}" "$r64/usr/bin/vigil"
}
check "arm64: qemu-aarch64 <root>/usr/lib/vigil/vigil selftest (and via the link)" t_selftest_arm64

# --- the unit's contract and sandbox -----------------------------------------

# notify_run LOG: runs `vigil run` from the root under strace (when present)
# with the environment vigil.service gives it, plus free ports, and plays
# systemd's notify socket. Writes the strace log to LOG.
notify_py=$(
	cat <<'PY'
import os, signal, socket, subprocess, sys, time, shutil
root, w, slog = sys.argv[1:4]
sock_path = os.path.join(w, "notify.sock")
def free_port():  # the embedded broker's client dials the listen address as given
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        return t.getsockname()[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock_path)
state = os.path.join(w, "run-state")
broker_port = free_port()  # the packaged config's broker, embedded here
os.makedirs(state, exist_ok=True)
env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
env.update(NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="1000000",
           VIGIL_DATA_DIR=state, GOMEMLIMIT="200MiB",
           VIGIL_MODELS_DIR=root + "/usr/share/vigil/models",
           VIGIL_HTTP_LISTEN="127.0.0.1:0",
           VIGIL_MQTT_EMBEDDED_BROKER_LISTEN="127.0.0.1:%d" % broker_port,
           VIGIL_MQTT_BROKER="tcp://127.0.0.1:%d" % broker_port)
cmd = [root + "/usr/bin/vigil", "run", "--config", root + "/etc/vigil/vigil.yaml"]
traced = shutil.which("strace") is not None
if traced:
    cmd = ["strace", "-f", "-qq", "-o", slog] + cmd
p = subprocess.Popen(cmd, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

def vigil_pid():  # vigil itself, not strace
    if not traced:
        return p.pid
    with open(slog) as f:
        return int(f.readline().split()[0])

def wait_for(word, secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        s.settimeout(max(0.1, deadline - time.time()))
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        if word in msg.split("\n"):
            return True
    return False

ok = True
t0 = time.time()
if not wait_for("READY=1", 60):
    print("no READY=1 within 60s"); ok = False
else:
    print("note: READY=1 after %.1fs%s" % (time.time() - t0, " (under strace)" if traced else ""))
    if not wait_for("WATCHDOG=1", 5):
        print("no WATCHDOG=1 within 5s of READY=1 (WATCHDOG_USEC=1s)"); ok = False
    os.kill(vigil_pid(), signal.SIGHUP)
    time.sleep(1)
    if p.poll() is not None:
        print("exited on SIGHUP"); ok = False
    elif not wait_for("WATCHDOG=1", 5):
        print("no WATCHDOG=1 after SIGHUP"); ok = False
if p.poll() is None:
    os.kill(vigil_pid(), signal.SIGTERM)
try:
    rc = p.wait(30)
except subprocess.TimeoutExpired:
    p.kill(); rc = "killed after 30s"
out = p.stdout.read().decode(errors="replace")
print(out[-3000:])
if rc != 0:
    print("exit status after SIGTERM:", rc); ok = False
sys.exit(0 if ok else 1)
PY
)
notify_run() { python3 -c "$notify_py" "$r86" "$w" "$1"; }
t_run() {
	command -v python3 >/dev/null || skip "no python3"
	notify_run "$w/strace-run.log"
}
check "vigil run: READY=1, WATCHDOG=1, survives SIGHUP, exits 0 on SIGTERM" t_run

# allowed_syscalls: the set vigil.service's SystemCallFilter= lines allow.
expand_group() {
	local n
	systemd-analyze syscall-filter "$1" | tail -n +2 | sed 's/#.*//; s/^[[:space:]]*//; /^$/d' |
		while read -r n; do
			case $n in @*) expand_group "$n" ;; *) echo "$n" ;; esac
		done
}
allowed_syscalls() {
	local line v list item
	: >"$w/allow" && : >"$w/deny"
	while read -r line; do
		v=${line#SystemCallFilter=}
		list=allow
		if [[ $v == '~'* ]]; then
			list=deny
			v=${v#'~'}
		fi
		for item in $v; do
			if [[ $item == @* ]]; then expand_group "$item"; else echo "$item"; fi >>"$w/$list"
		done
	done < <(grep '^SystemCallFilter=' "$here/vigil.service")
	comm -23 <(sort -u "$w/allow") <(sort -u "$w/deny")
}
t_sandbox() {
	command -v strace >/dev/null || skip "no strace"
	command -v systemd-analyze >/dev/null || skip "no systemd-analyze"
	(cd / && env -u LD_LIBRARY_PATH strace -f -qq -o "$w/strace-selftest.log" "$r86/usr/lib/vigil/vigil" selftest >/dev/null)
	local logs=("$w/strace-selftest.log") used denied wx
	if [ -s "$w/strace-run.log" ]; then logs+=("$w/strace-run.log"); else note "vigil run was not traced: selftest only"; fi
	wx=$(grep -hE 'PROT_(READ\|)?WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE' "${logs[@]}" | head -5 || true)
	[ -z "$wx" ] || fail "writable+executable memory, which MemoryDenyWriteExecute=yes refuses: $wx"
	used=$(grep -hoP '^\d+ +(<\.\.\. )?\K[a-z0-9_]+(?=\(| resumed)' "${logs[@]}" | sort -u)
	# execve is strace starting vigil, before the filter would apply.
	denied=$(comm -23 <(echo "$used" | grep -vx execve) <(allowed_syscalls | sort -u))
	[ -z "$denied" ] || fail "syscalls outside SystemCallFilter: $(echo "$denied" | tr '\n' ' ')"
	note "$(echo "$used" | wc -l) distinct syscalls, all allowed; no W+X mapping"
}
check "sandbox: no W+X memory, every syscall within SystemCallFilter (strace)" t_sandbox

# --- tarballs and install.sh ----------------------------------------------------

t_tarballs() {
	local arch tgz name r d
	for arch in amd64 arm64; do
		tgz=$out/vigil_${version}_linux_$arch.tar.gz
		name=vigil_${version}_linux_$arch
		tar -tzf "$tgz" | grep -v "^$name/" && fail "$arch: entries outside $name/"
		tar -tvzf "$tgz" | awk '$2 != "0/0" && $2 != "root/root" { bad = 1; print } END { exit bad }' || fail "$arch: owners"
		d=$w/tar-$arch && mkdir -p "$d" && tar -xzf "$tgz" -C "$d"
		[ "$(stat -c %a "$d/$name/install.sh")" = 755 ] || fail "$arch: install.sh is not 0755"
		[ "$(cat "$d/$name/ARCH")" = "$arch" ] || fail "$arch: ARCH"
		sh -n "$d/$name/install.sh"
		r=$w/root-$arch
		# Same files, links and bytes as the .deb, plus install.sh and ARCH.
		diff <(cd "$r" && find . ! -type d -printf '%p %l\n' | sort) \
			<(cd "$d/$name" && find . ! -type d ! -name install.sh ! -name ARCH -printf '%p %l\n' | sort) ||
			fail "$arch: the tarball's tree differs from the .deb's"
		(cd "$r" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$w/sum-deb-$arch"
		(cd "$d/$name" && sha256sum -c --quiet "$w/sum-deb-$arch") || fail "$arch: contents differ"
	done
}
check "tarballs: the .deb's tree under vigil_<v>_linux_<arch>/ plus install.sh" t_tarballs

t_install_sh() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (chown to the vigil group; dpkg --root)"
	local d=$w/tar-amd64/vigil_${version}_linux_amd64 img=$w/img gid
	# An image: it has a passwd and group (a bare staging folder gets none).
	mkdir -p "$img/etc"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$img/etc/passwd"
	echo 'root:x:0:' >"$img/etc/group"
	"$d/install.sh" --root "$img" --no-start
	for f in usr/lib/vigil/vigil usr/lib/vigil/lib/libtensorflowlite_c.so etc/vigil/vigil.yaml \
		etc/systemd/system/vigil.service usr/lib/sysusers.d/vigil.conf usr/share/doc/vigil/copyright; do
		[ -e "$img/$f" ] || fail "install.sh --root: no $f"
	done
	[ "$(readlink "$img/usr/bin/vigil")" = ../lib/vigil/vigil ] || fail "usr/bin/vigil link"
	if command -v systemd-sysusers >/dev/null; then
		gid=$(awk -F: '$1 == "vigil" { print $3 }' "$img/etc/group")
		[ -n "$gid" ] || fail "install.sh --root made no group vigil in the image"
		[ "$(stat -c %a:%u:%g "$img/etc/vigil/vigil.yaml")" = "640:0:$gid" ] ||
			fail "config is $(stat -c %a:%u:%g "$img/etc/vigil/vigil.yaml"), want 640:root:vigil"
	else
		[ "$(stat -c %a "$img/etc/vigil/vigil.yaml")" = 644 ] || fail "config mode $(stat -c %a "$img/etc/vigil/vigil.yaml") without a vigil group"
	fi
	if command -v systemctl >/dev/null; then
		[ -L "$img/etc/systemd/system/multi-user.target.wants/vigil.service" ] || fail "not enabled in the root"
	fi
	selftest "$img/usr/bin/vigil" >/dev/null || fail "selftest from the installed root"
	# An upgrade keeps an edited config and puts the new one beside it.
	echo "# edited" >>"$img/etc/vigil/vigil.yaml"
	"$d/install.sh" --root "$img" --no-start
	tail -n1 "$img/etc/vigil/vigil.yaml" | grep -qx '# edited' || fail "upgrade replaced the edited config"
	cmp -s "$img/etc/vigil/vigil.yaml.new" "$d/etc/vigil/vigil.yaml" || fail "no vigil.yaml.new"
	mkdir -p "$img/var/lib/vigil" && touch "$img/var/lib/vigil/buffer"
	"$d/install.sh" --root "$img" --uninstall
	[[ ! -e "$img/usr/lib/vigil" && ! -L "$img/usr/bin/vigil" ]] || fail "--uninstall left the program"
	[[ -e "$img/etc/vigil/vigil.yaml" && -e "$img/var/lib/vigil/buffer" ]] || fail "--uninstall removed config or state"
	"$d/install.sh" --root "$img" --purge
	[[ ! -e "$img/etc/vigil" && ! -e "$img/var/lib/vigil" ]] || fail "--purge left config or state"
}
check "install.sh --root: install, upgrade keeps an edited config, uninstall, purge" t_install_sh

# --- dpkg, for real, into a throwaway root -----------------------------------

# The throwaway root stands for a device image: a passwd and group with root
# only, and dpkg's database. --force-script-chrootless runs the maintainer
# scripts on the host with DPKG_ROOT set, so they act on the root, never on
# the host; --force-depends because libc6 and friends are not in the root.
R=$w/dpkg-root
D=(dpkg --root="$R" --force-script-chrootless --force-depends --log=/dev/null)
host_user=$(getent passwd vigil || true)

t_dpkg_install() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (chown to the vigil group; dpkg --root)"
	mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers" "$R/etc"
	touch "$R/var/lib/dpkg/status"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
	echo 'root:x:0:' >"$R/etc/group"
	"${D[@]}" -i "$deb_amd64"
	dpkg-query --admindir="$R/var/lib/dpkg" -W -f '${Status}\n' vigil | grep -qx 'install ok installed' || fail "not installed"
	if command -v systemd-sysusers >/dev/null; then
		grep -q '^vigil:' "$R/etc/passwd" || fail "postinst made no vigil user in the root"
		[ "$(stat -c %a:%u:%g "$R/etc/vigil/vigil.yaml")" = "640:0:$(awk -F: '$1 == "vigil" { print $3 }' "$R/etc/group")" ] ||
			fail "config is $(stat -c %a:%u:%g "$R/etc/vigil/vigil.yaml"), want 640:root:vigil"
		note "postinst: $(grep '^vigil:' "$R/etc/passwd")"
	else
		note "no systemd-sysusers: user creation into a root not checked"
	fi
	[ -L "$R/etc/systemd/system/multi-user.target.wants/vigil.service" ] || fail "postinst did not enable vigil.service"
	[ "$(getent passwd vigil || true)" = "$host_user" ] || fail "the host's user database changed"
}
check "dpkg --root: installs the amd64 .deb into a throwaway root (user, config mode, enabled)" t_dpkg_install

# In the root installed by dpkg, at the package's real paths: chroot into it
# with only the C libraries the binary needs copied in, /proc and /dev bound
# in a private mount namespace. Runs as the vigil user what vigil.service
# runs: check-config on the config exactly as installed (data_dir
# /var/lib/vigil, models_dir /usr/share/vigil/models), then `vigil run` with
# the unit's Environment= for a few seconds; and selftest.
t_chroot() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (chroot, unshare)"
	command -v unshare >/dev/null || skip "no unshare"
	[ -e "$R/usr/bin/vigil" ] || fail "the dpkg root has no usr/bin/vigil"
	local lib uid gid envs=() line rc
	for lib in $(env -u LD_LIBRARY_PATH ldd "$R/usr/lib/vigil/vigil" | grep -oE '/[^ ]+' | grep -v "^$R/"); do
		mkdir -p "$R$(dirname "$lib")"
		cp -L "$lib" "$R$lib"
	done
	uid=$(awk -F: '$1 == "vigil" { print $3 }' "$R/etc/passwd")
	gid=$(awk -F: '$1 == "vigil" { print $3 }' "$R/etc/group")
	[ -n "$uid" ] || { uid=65534 gid=65534 && chmod 0644 "$R/etc/vigil/vigil.yaml" && note "no vigil user in the root: ran as 65534"; }
	# What systemd does for StateDirectory=vigil, StateDirectoryMode=0750.
	mkdir -p "$R/proc" "$R/dev" "$R/tmp" "$R/var/lib/vigil"
	chown "$uid:$gid" "$R/var/lib/vigil" && chmod 0750 "$R/var/lib/vigil"
	# The unit's Environment= lines, %S being /var/lib; free ports so that
	# no other broker or test on this machine collides with the demo's.
	while read -r line; do
		envs+=("${line//%S//var/lib}")
	done < <(sed -n 's/^Environment=//p' "$R/lib/systemd/system/vigil.service")
	# The embedded broker's client dials the listen address as written, so
	# it gets a real free port, not 0.
	bport=$(free_port)
	envs+=(VIGIL_HTTP_LISTEN=127.0.0.1:0 "VIGIL_MQTT_EMBEDDED_BROKER_LISTEN=127.0.0.1:$bport"
		"VIGIL_MQTT_BROKER=tcp://127.0.0.1:$bport" PATH=/usr/sbin:/usr/bin:/sbin:/bin)
	note "environment: ${envs[*]}"
	rc=0
	# shellcheck disable=SC2016 # expanded by the inner sh
	env -i "${envs[@]}" unshare --mount --fork sh -ec '
		R=$1 uid=$2 gid=$3
		mount --rbind /proc "$R/proc"
		mount --rbind /dev "$R/dev"
		as_vigil() { chroot --userspec="$uid:$gid" --groups="$gid" "$R" "$@"; }
		echo "== check-config /etc/vigil/vigil.yaml (as $uid:$gid)"
		as_vigil /usr/bin/vigil check-config /etc/vigil/vigil.yaml
		echo "== selftest"
		as_vigil /usr/bin/vigil selftest >"$R/tmp/selftest.log" 2>&1 || { cat "$R/tmp/selftest.log"; exit 1; }
		grep "selftest passed" "$R/tmp/selftest.log"
		echo "== run --config /etc/vigil/vigil.yaml for 6s, then SIGTERM"
		timeout --preserve-status -s TERM 6 chroot --userspec="$uid:$gid" --groups="$gid" "$R" \
			/usr/bin/vigil run --config /etc/vigil/vigil.yaml >"$R/tmp/run.log" 2>&1 || {
			rc=$?; tail -n 20 "$R/tmp/run.log"; echo "vigil run exited $rc"; exit 1; }
	' sh "$R" "$uid" "$gid" || rc=$?
	[ $rc -eq 0 ] || fail "in the chroot"
	[ -n "$(find "$R/var/lib/vigil" -mindepth 1 -user "$uid" -print -quit)" ] ||
		fail "vigil run wrote nothing owned by uid $uid into /var/lib/vigil: $(ls -la "$R/var/lib/vigil")"
	grep -E 'level=WARN' "$R/tmp/run.log" | head -n 5 | sed 's/^/note: run: /' || true
	! grep -E 'level=ERROR' "$R/tmp/run.log" || fail "vigil run logged errors"
	note "run: $(grep -c . "$R/tmp/run.log") log lines, exit 0 on SIGTERM; /var/lib/vigil: $(du -sh "$R/var/lib/vigil" | cut -f1)"
	rm -rf "${R:?}/tmp/run.log" "$R/tmp/selftest.log" "$R/var/lib/vigil"/*
}
check "chroot into the dpkg root: check-config, selftest and run as the vigil user at the real paths" t_chroot

t_dpkg_upgrade_remove() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (chown to the vigil group; dpkg --root)"
	dpkg-query --admindir="$R/var/lib/dpkg" -W -f '${Status}\n' vigil | grep -qx 'install ok installed' || fail "not installed"
	# Upgrade (a reinstall): the admin's config edit and the state survive.
	echo "# edited" >>"$R/etc/vigil/vigil.yaml"
	mkdir -p "$R/var/lib/vigil" && touch "$R/var/lib/vigil/buffer" "$R/etc/vigil/vigil.env"
	"${D[@]}" -i "$deb_amd64"
	tail -n1 "$R/etc/vigil/vigil.yaml" | grep -qx '# edited' || fail "upgrade replaced the edited conffile"
	"${D[@]}" -r vigil
	[ ! -e "$R/usr/lib/vigil/vigil" ] || fail "remove left the binary"
	[[ -e "$R/etc/vigil/vigil.yaml" && -e "$R/var/lib/vigil/buffer" ]] || fail "remove deleted config or state"
	"${D[@]}" -P vigil
	[[ ! -e "$R/etc/vigil" && ! -e "$R/var/lib/vigil" ]] || fail "purge left /etc/vigil or /var/lib/vigil"
	[ ! -e "$R/etc/systemd/system/multi-user.target.wants/vigil.service" ] || fail "purge left the unit enabled"
	grep -q '^vigil:' "$R/etc/passwd" || ! command -v systemd-sysusers >/dev/null || fail "purge removed the vigil user"
	[ "$(getent passwd vigil || true)" = "$host_user" ] || fail "the host's user database changed"
}
check "dpkg --root: upgrade keeps conffile edits, remove keeps state, purge deletes it" t_dpkg_upgrade_remove

# --- lintian -------------------------------------------------------------------

t_lintian() {
	command -v lintian >/dev/null || skip "no lintian (apt-get install lintian)"
	local o
	o=$(lintian --no-tag-display-limit "$deb_amd64" "$deb_arm64" 2>&1 | grep -v 'running with root privileges' || true)
	echo "$o" | grep '^W: ' | sort -u | sed 's/^/note: /' || true
	! echo "$o" | grep '^E: ' || fail "lintian errors"
}
check "lintian: no errors (warnings listed)" t_lintian

echo "$pass passed, $failed failed$([ $skipped -gt 0 ] && echo ", $skipped skipped")"
[ $failed -eq 0 ]
