#!/usr/bin/env bash
# stats-cost.sh: what statistics cost. Builds dcache twice, with the
# per-request statistics and in-flight tracking (the default build) and with
# them compiled out (-tags nostats), and runs the same fio 4 KiB random write
# job against each, alternating, ROUNDS times. For each run it reports the
# daemon's CPU time (user + system, from /proc/PID/stat) spent from the start
# of the job to the end of its final fsync; destage is held off
# (flush.max_dirty_age 1h, a dirty budget larger than the file) so that the
# runs do the same work. The summary gives the median CPU time of each build
# and their difference.
#
#   scripts/stats-cost.sh                     # 5 rounds, 256MiB file, 1GiB written
#   ROUNDS=9 SIZE=512M IO=2G scripts/stats-cost.sh
#   DIRECT=1 scripts/stats-cost.sh           # O_DIRECT: one FUSE request per 4 KiB write
#
# Env: WORK (scratch directory, default /var/tmp/dcache-stats-cost).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=${WORK:-/var/tmp/dcache-stats-cost}
ROUNDS=${ROUNDS:-5}
SIZE=${SIZE:-256M}
IO=${IO:-1G}
DIRECT=${DIRECT:-0}
for c in fio python3; do command -v $c >/dev/null || { echo "stats-cost: $c is not installed (make deps)" >&2; exit 2; }; done

mkdir -p "$ROOT/bin"
(cd "$ROOT" && go build -o bin/dcache-stats . && go build -tags nostats -o bin/dcache-nostats .)
rm -rf "$WORK"
mkdir -p "$WORK/mnt"
RES=$WORK/results.txt
: >"$RES"

cleanup() {
	set +e
	if mountpoint -q "$WORK/mnt"; then "$ROOT/bin/dcache-stats" umount "$WORK/mnt" >/dev/null; fi
}
trap cleanup EXIT

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

for r in $(seq "$ROUNDS"); do
	for v in stats nostats; do
		bin=$ROOT/bin/dcache-$v
		rm -rf "$WORK/data"
		"$bin" mount -d --data-dir "$WORK/data" --cache.size 1GiB --quota.dirty_bytes 768MiB \
			--flush.max_dirty_age 1h --log.replicas "$WORK/data/log:ssd:2GiB" "$WORK/mnt" >/dev/null
		pid=$(head -1 "$WORK/data/dcache.lock")
		c0=$(cpu "$pid")
		t0=$(date +%s.%N)
		fio --name=randwrite --rw=randwrite --bs=4k --ioengine=psync --iodepth=1 --fallocate=none \
			--filename="$WORK/mnt/data" --size="$SIZE" --io_size="$IO" --randrepeat=1 --end_fsync=1 --direct="$DIRECT" \
			--output-format=json >"$WORK/fio-$v-$r.json"
		c1=$(cpu "$pid")
		t1=$(date +%s.%N)
		writes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["windows"]["since_mount"]["operations"]["write"]["count"])' "$WORK/mnt/.dcache/stats.json")
		"$bin" umount "$WORK/mnt" >/dev/null
		python3 - "$v" "$r" "$c0" "$c1" "$hz" "$t0" "$t1" "$writes" <<'PY' | tee -a "$RES"
import sys
v, r, c0, c1, hz, t0, t1, w = sys.argv[1:]
cpu = (int(c1) - int(c0)) / int(hz)
per = f" cpu_us_per_write={1e6*cpu/int(w):.1f}" if int(w) else ""
print(f"{v} round={r} cpu_s={cpu:.2f} wall_s={float(t1)-float(t0):.2f} fuse_writes={w}{per}")
PY
	done
done

python3 - "$RES" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) round=\d+ cpu_s=([\d.]+)", line)
    if m:
        runs.setdefault(m[1], []).append(float(m[2]))
s, n = statistics.median(runs["stats"]), statistics.median(runs["nostats"])
print(f"median daemon CPU: stats {s:.2f}s, nostats {n:.2f}s, difference {100*(s-n)/n:+.2f}% "
      f"(runs: stats {sorted(runs['stats'])}, nostats {sorted(runs['nostats'])})")
PY
