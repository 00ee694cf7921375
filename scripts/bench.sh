#!/usr/bin/env bash
# bench.sh: run the fio suite against dcache, the native directory that holds
# dcache's data, and a FUSE passthrough (go-fuse's loopback example) in one
# run, and print each job's figures with their ratio to the native directory.
#
#   scripts/bench.sh                  # whole suite (about 10 minutes)
#   JOBS="randwrite meta" scripts/bench.sh
#   SIZE=256M RT=5 scripts/bench.sh   # knobs of fio-suite.sh pass through
#
# Env: SUITE (path of fio-suite.sh, default ../shared/bench/fio-suite.sh),
# WORK (scratch directory, default /var/tmp/dcache-bench), TARGETS (subset of
# "native dcache passthrough"), MOUNT_CONFIG (a config file for dcache),
# MOUNT_ARGS (extra flags for dcache mount).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SUITE=${SUITE:-$ROOT/../shared/bench/fio-suite.sh}
WORK=${WORK:-/var/tmp/dcache-bench}
TARGETS=${TARGETS:-"native dcache passthrough"}
BIN=$ROOT/bin/dcache
LOOPBACK=$ROOT/bin/loopback

[ -x "$SUITE" ] || [ -f "$SUITE" ] || { echo "bench: fio suite not found at $SUITE (set SUITE)" >&2; exit 2; }
for c in fio python3 bc; do command -v $c >/dev/null || { echo "bench: $c is not installed (make deps)" >&2; exit 2; }; done
(cd "$ROOT" && go build -o "$BIN" . && go build -o "$LOOPBACK" github.com/hanwen/go-fuse/v2/example/loopback)

rm -rf "$WORK"
mkdir -p "$WORK"/{native,mnt,pt-orig,pt-mnt}
OUT=$WORK/results
mkdir -p "$OUT"

cleanup() {
	set +e
	if mountpoint -q "$WORK/mnt"; then "$BIN" umount "$WORK/mnt" >/dev/null; fi
	if mountpoint -q "$WORK/pt-mnt"; then fusermount3 -u "$WORK/pt-mnt" 2>/dev/null || umount "$WORK/pt-mnt"; fi
	[ -n "${PT_PID:-}" ] && wait "$PT_PID" 2>/dev/null
}
trap cleanup EXIT

has() { [[ " $TARGETS " == *" $1 "* ]]; }

if has native; then
	echo "# native: $WORK/native" >&2
	bash "$SUITE" "$WORK/native" native | tee "$OUT/native.txt"
fi
if has dcache; then
	echo "# dcache: $WORK/mnt (data in $WORK/dcache-data)" >&2
	cfg=()
	[ -n "${MOUNT_CONFIG:-}" ] && cfg=(--config "$MOUNT_CONFIG")
	# shellcheck disable=SC2086
	"$BIN" mount -d "${cfg[@]}" --data-dir "$WORK/dcache-data" ${MOUNT_ARGS:-} "$WORK/mnt"
	bash "$SUITE" "$WORK/mnt" dcache | tee "$OUT/dcache.txt"
	ps -o rss= -p "$(head -1 "$WORK/dcache-data/dcache.lock")" | awk '{printf "# dcache daemon RSS after the suite: %.0f MiB\n", $1/1024}' | tee -a "$OUT/dcache.txt"
	"$BIN" umount "$WORK/mnt" >&2
fi
if has passthrough; then
	echo "# passthrough: go-fuse loopback of $WORK/pt-orig on $WORK/pt-mnt" >&2
	"$LOOPBACK" "$WORK/pt-mnt" "$WORK/pt-orig" >"$WORK/loopback.log" 2>&1 &
	PT_PID=$!
	for _ in $(seq 100); do mountpoint -q "$WORK/pt-mnt" && break; sleep 0.1; done
	bash "$SUITE" "$WORK/pt-mnt" passthrough | tee "$OUT/passthrough.txt"
	fusermount3 -u "$WORK/pt-mnt" 2>/dev/null || umount "$WORK/pt-mnt"
	wait "$PT_PID" || true
	PT_PID=
fi

python3 "$HERE/bench_table.py" "$OUT"
