#!/usr/bin/env bash
# cross/dist/notices_check.sh BIN — fail when a Go module linked into BIN
# (from `go version -m BIN`) has no row in THIRD_PARTY_NOTICES.md.
# `make notices-check` runs it on bin/vigil; dist.sh on each packaged binary.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 BIN" >&2; exit 2; }
missing=0
while read -r kind path _; do
	[ "$kind" = dep ] || continue
	if ! grep -qF "| \`$path\` |" "$top/THIRD_PARTY_NOTICES.md"; then
		echo "notices: $path is linked into $1 but has no row in THIRD_PARTY_NOTICES.md" >&2
		missing=1
	fi
done < <(go version -m "$1")
[ $missing -eq 0 ] && echo "notices: every module linked into $1 is listed in THIRD_PARTY_NOTICES.md"
exit $missing
