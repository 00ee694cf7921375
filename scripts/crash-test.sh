#!/usr/bin/env bash
# Kill -9 the dcache daemon under a writer, again and again, for DURATION
# (default 10m; Go syntax: 90s, 30m, 4h), and check after every restart that
# each fsynced byte, file creation, rename and unlink is there.
#
#   scripts/crash-test.sh [DURATION]
#
# It runs TestCrash (crash_test.go) against bin/dcache, built here: rounds
# of "writer running, daemon killed at a random moment (sometimes during a
# clean shutdown, sometimes again during recovery), restart on the same data
# dir, compare", on a fresh data dir every 40 rounds, alternating one and two
# log replicas. Every round prints what it did and verified; the last line
# sums up. Needs root and /dev/fuse.
#
# Environment: DCACHE_CRASH_SEED=N repeats a run's random choices (printed
# at the start); RACE=1 also runs the writer under the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

duration=${1:-10m}
if [[ ! $duration =~ ^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$ ]]; then
	echo "usage: $0 [DURATION]   (e.g. 90s, 30m, 4h)" >&2
	exit 2
fi
if [[ $(id -u) != 0 || ! -e /dev/fuse ]]; then
	echo "$0: needs root and /dev/fuse to mount" >&2
	exit 2
fi

version=$(git describe --always --dirty 2>/dev/null || echo dev)
go build -ldflags "-X main.version=$version" -o bin/dcache .
race=()
if [[ ${RACE:-0} == 1 ]]; then
	race=(-race)
fi

echo "crash test: $duration against bin/dcache ($version)"
start=$(date +%s)
set +e
DCACHE_TEST_BIN="$PWD/bin/dcache" DCACHE_CRASH_DURATION="$duration" \
	go test "${race[@]}" -run '^TestCrash$' -count=1 -v -timeout 0 . 2>&1 |
	sed -u -n -e 's/^ *crash_test.go:[0-9]*: //p' -e '/^\(---\|ok\|FAIL\|PASS\|panic\)/p' -e '/^ \{4,\}/p'
rc=${PIPESTATUS[0]}
set -e
echo "crash test: $( ((rc == 0)) && echo passed || echo FAILED) after $(($(date +%s) - start))s"
exit "$rc"
