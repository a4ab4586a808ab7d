# Packaging, included by the top-level Makefile. See docs/operating.md.
#
#   make dist       dist/vigil_<v>_{amd64,arm64}.deb, dist/vigil_<v>_linux_{amd64,arm64}.tar.gz
#                   and dist/SHA256SUMS, from bin/ as `make build cross` leaves it
#   make dist-test  builds the packages into a temporary folder and installs
#                   them into throwaway roots: selftest, check-config, the unit
#
# <v> is VERSION (git describe) made into a Debian version by dist.sh:
# v1.2.3 → 1.2.3, v1.2.3-4-gabc1234 → 1.2.3+git4.abc1234, an untagged
# abc1234 → 0.0.0~git<commit time>.abc1234; -dirty → +dirty.

DIST_DIR ?= $(ROOT)/dist

.PHONY: dist dist-test notices-check

notices-check: build ## fail when a module linked into bin/vigil has no row in THIRD_PARTY_NOTICES.md
	cross/dist/notices_check.sh bin/vigil

dist: build cross ## build the .deb packages and tarballs for amd64 and arm64 into dist/
	cross/dist/dist.sh '$(VERSION)' '$(DIST_DIR)'

dist-test: build cross ## install the packages into throwaway roots and run them (about 1-2 min)
	cross/dist/dist_test.sh '$(VERSION)'
