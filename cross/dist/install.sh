#!/bin/sh
# install.sh — install Vigil from this tarball on a device without dpkg, in
# the same layout as the .deb:
#
#   /usr/lib/vigil/vigil                      the agent (rpath $ORIGIN/lib)
#   /usr/lib/vigil/lib/libtensorflowlite_c.so its private TFLite runtime
#   /usr/bin/vigil                            -> ../lib/vigil/vigil
#   /usr/share/vigil/models/                  default models
#   /etc/vigil/vigil.yaml                     config (an existing one is kept;
#                                             the new one goes to vigil.yaml.new)
#   /etc/systemd/system/vigil.service         the unit (a local install's place)
#   /usr/lib/sysusers.d/vigil.conf            the vigil user, for systemd-sysusers
#   /usr/share/doc/vigil/                     copyright and licenses
#
# Usage (as root, from the unpacked folder):
#   ./install.sh [--root DIR] [--no-start]   install or upgrade
#   ./install.sh [--root DIR] --uninstall    remove the program; keep /etc/vigil
#                                            and /var/lib/vigil (the buffer)
#   ./install.sh [--root DIR] --purge        remove those too (the user stays)
#
# --root DIR installs into an image or staging folder: files only; the vigil
# user is written into the image's passwd and group by systemd-sysusers
# --root when the image has an /etc/passwd and the build host has
# systemd-sysusers (else systemd-sysusers creates it at first boot and the
# config stays 0644) and the unit is enabled offline with
# systemctl --root when systemctl exists. Without --root: creates
# the vigil user, checks that the binary runs on this device (glibc >= 2.34,
# libstdc++) before touching anything, enables vigil.service and (re)starts it
# unless --no-start. Needs a glibc system (not musl/Alpine).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=
start=yes
mode=install

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage() {
	cat >&2 <<-'USAGE'
	usage: install.sh [--root DIR] [--no-start]   install or upgrade
	       install.sh [--root DIR] --uninstall    remove; keep /etc/vigil and /var/lib/vigil
	       install.sh [--root DIR] --purge        remove those too
	USAGE
	exit 2
}

while [ $# -gt 0 ]; do
	case "$1" in
	--root) [ $# -ge 2 ] || usage; root=${2%/}; shift 2 ;;
	--root=*) root=${1#--root=}; root=${root%/}; shift ;;
	--no-start) start=no; shift ;;
	--uninstall) mode=uninstall; shift ;;
	--purge) mode=purge; shift ;;
	-h | --help) usage ;;
	*) log "unknown argument $1"; usage ;;
	esac
done

[ -z "$root" ] && [ "$(id -u)" -ne 0 ] && die "run as root (or use --root DIR)"
if [ -n "$root" ]; then
	mkdir -p "$root"
	root=$(cd "$root" && pwd)
	[ "$root" = / ] && root=
fi
live() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

uninstall() {
	if live; then
		systemctl disable --now vigil.service >/dev/null 2>&1 || true
	elif command -v systemctl >/dev/null 2>&1; then
		systemctl --root="${root:-/}" disable vigil.service >/dev/null 2>&1 || true
	fi
	rm -f "$root/usr/bin/vigil" "$root/usr/share/bash-completion/completions/vigil" "$root/usr/share/zsh/vendor-completions/_vigil" "$root/etc/systemd/system/vigil.service" \
		"$root/usr/lib/sysusers.d/vigil.conf"
	rm -rf "$root/usr/lib/vigil" "$root/usr/share/vigil" "$root/usr/share/doc/vigil"
	if live; then systemctl daemon-reload || true; fi
	if [ "$mode" = purge ]; then
		rm -rf "$root/etc/vigil" "$root/var/lib/vigil"
		log "removed vigil, /etc/vigil and /var/lib/vigil; the system user vigil is kept"
	else
		log "removed vigil; kept /etc/vigil and /var/lib/vigil (--purge removes them)"
	fi
}

if [ "$mode" != install ]; then
	uninstall
	exit 0
fi

for f in usr/lib/vigil/vigil usr/lib/vigil/lib/libtensorflowlite_c.so lib/systemd/system/vigil.service; do
	[ -e "$here/$f" ] || die "$here/$f is missing: run install.sh from the unpacked tarball"
done

# Refuse a binary this device cannot run before changing anything.
if [ -z "$root" ]; then
	arch=$(cat "$here/ARCH" 2>/dev/null || echo unknown)
	case "$(uname -m)" in
	x86_64) want=amd64 ;;
	aarch64 | arm64) want=arm64 ;;
	*) want=$(uname -m) ;;
	esac
	[ "$arch" = "$want" ] || die "this tarball is for linux/$arch, this device is $(uname -m)"
	if ! out=$("$here/usr/lib/vigil/vigil" version 2>&1); then
		die "vigil does not run here (needs glibc >= 2.34 and libstdc++): $out"
	fi
	log "$out"
fi

log "installing into ${root:-/}"
install -d -m 0755 "$root/usr/bin" "$root/usr/lib/vigil/lib" "$root/usr/share/vigil/models" \
	"$root/usr/share/doc/vigil" "$root/etc/systemd/system" "$root/usr/lib/sysusers.d" "$root/etc/vigil"
# Copy to a temporary name and rename, so a running vigil keeps its files.
put() { # mode src dst
	install -m "$1" "$2" "$3.new.$$"
	mv -f "$3.new.$$" "$3"
}
put 0755 "$here/usr/lib/vigil/vigil" "$root/usr/lib/vigil/vigil"
put 0644 "$here/usr/lib/vigil/lib/libtensorflowlite_c.so" "$root/usr/lib/vigil/lib/libtensorflowlite_c.so"
ln -sfn ../lib/vigil/vigil "$root/usr/bin/vigil"
rm -rf "$root/usr/share/vigil/models"
install -d -m 0755 "$root/usr/share/vigil/models"
for f in "$here"/usr/share/vigil/models/*; do
	[ -e "$f" ] && install -m 0644 "$f" "$root/usr/share/vigil/models/"
done
for f in "$here"/usr/share/doc/vigil/*; do
	[ -e "$f" ] && install -m 0644 "$f" "$root/usr/share/doc/vigil/"
done
for f in usr/share/bash-completion/completions/vigil usr/share/zsh/vendor-completions/_vigil; do
	[ -e "$here/$f" ] || continue
	install -d -m 0755 "$(dirname "$root/$f")"
	put 0644 "$here/$f" "$root/$f"
done
put 0644 "$here/lib/systemd/system/vigil.service" "$root/etc/systemd/system/vigil.service"
put 0644 "$here/usr/lib/sysusers.d/vigil.conf" "$root/usr/lib/sysusers.d/vigil.conf"

conf=$root/etc/vigil/vigil.yaml
if [ -e "$here/etc/vigil/vigil.yaml" ]; then
	if [ ! -e "$conf" ]; then
		install -m 0640 "$here/etc/vigil/vigil.yaml" "$conf"
	elif ! cmp -s "$here/etc/vigil/vigil.yaml" "$conf"; then
		install -m 0640 "$here/etc/vigil/vigil.yaml" "$conf.new"
		log "kept your $conf; the new example is $conf.new"
	fi
fi

if [ -z "$root" ] && ! getent passwd vigil >/dev/null 2>&1; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers vigil.conf
	elif command -v useradd >/dev/null 2>&1; then
		getent group vigil >/dev/null 2>&1 || groupadd --system vigil
		useradd --system --gid vigil --no-create-home --home-dir /var/lib/vigil \
			--shell /usr/sbin/nologin vigil
	elif command -v adduser >/dev/null 2>&1; then # busybox
		getent group vigil >/dev/null 2>&1 || addgroup -S vigil
		adduser -S -D -H -h /var/lib/vigil -s /sbin/nologin -G vigil vigil
	else
		die "cannot create the system user vigil: no systemd-sysusers, useradd or adduser"
	fi
	log "created the system user vigil"
fi
# The config may hold secrets: root writes it, group vigil reads it.
if [ -z "$root" ]; then
	for f in "$conf" "$conf.new"; do
		[ -e "$f" ] || continue
		chown root:vigil "$f"
		chmod 0640 "$f"
	done
elif [ -n "$root" ]; then
	# Into an image: the group must exist in the image's /etc/group, or the
	# service could not read a 0640 config after first boot. Only into a
	# root that has a passwd file: a staging folder copied onto a device
	# must not bring a passwd holding only vigil.
	if [ -e "$root/etc/passwd" ] && command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers --root="$root" vigil.conf || log "systemd-sysusers --root failed"
	fi
	gid=$(awk -F: '$1 == "vigil" { print $3 }' "$root/etc/group" 2>/dev/null || true)
	for f in "$conf" "$conf.new"; do
		[ -e "$f" ] || continue
		if [ -n "$gid" ]; then
			chown "0:$gid" "$f"
			chmod 0640 "$f"
		else
			chmod 0644 "$f"
		fi
	done
	[ -n "$gid" ] || log "no group vigil in $root/etc/group: $conf is 0644 (keep secrets in vigil.env)"
fi

if live; then
	systemctl daemon-reload
	systemctl enable vigil.service >/dev/null 2>&1
	if [ "$start" = yes ]; then
		systemctl restart vigil.service || log "vigil did not start: systemctl status vigil; journalctl -u vigil"
	fi
	log "installed; vigil.service is enabled$([ "$start" = yes ] && echo ' and started')"
elif command -v systemctl >/dev/null 2>&1; then
	systemctl --root="${root:-/}" enable vigil.service >/dev/null 2>&1 || true
	log "installed; vigil.service is enabled and starts at the next boot"
else
	log "installed; no systemd here: run it as the vigil user with"
	log "  VIGIL_DATA_DIR=/var/lib/vigil /usr/bin/vigil run --config /etc/vigil/vigil.yaml"
	log "  (create /var/lib/vigil owned by vigil, mode 0750, first)"
fi
