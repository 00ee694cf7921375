#!/usr/bin/env bash
# policy-trace.sh: does the foreground keep its speed when the cache fills,
# and does destage keep up with the backend?
#
# In one run, on one machine:
#   1. the backend directory's sequential write speed (fio, 1 MiB writes,
#      fdatasync at the end), the yardstick for destage;
#   2. against a dcache mount with a small dirty budget (DIRTY), a fio job
#      writing 4× DIRTY sequentially (1 MiB writes), then one writing random
#      4 KiB blocks, the same volume, into a file of that size.
# For each job it prints a per-second trace: the foreground's write speed
# (fio's bandwidth log, 1 s averages) next to the bytes destage appended to
# the backend's segments in that second, then
#   - min/median of the foreground, and the longest stretch below 25% of the
#     median (the goal: never more than 1 s),
#   - what destage appended per second while the job ran.
# 3. Destage throughput on its own: a mount that does not destage before it
#    stops (high and throttle watermarks 1, no age limit, no sequential
#    cutoff) takes DRAIN bytes sequentially; `dcache umount` then destages
#    it all, and the daemon's log says how long that took. Compared with
#    the backend's sequential speed for the same volume, measured just
#    before (goal: at least 0.8×).
#
#   scripts/policy-trace.sh
#   DIRTY=128M CACHE=512M scripts/policy-trace.sh
#   MOUNT_ARGS="--flush.sequential_cutoff 0" scripts/policy-trace.sh
#
# Env: WORK (scratch directory, default /var/tmp/dcache-policy), DRAIN
# (volume of the destage measurement, default 1G), DIRTY
# (quota.dirty_bytes, default 64M), CACHE (cache.size, default 256M), LOG
# (log replica size, default 1G), DIRECT (fio --direct, default 1: the
# kernel's page cache out of the picture), MOUNT_ARGS (extra mount flags).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=${WORK:-/var/tmp/dcache-policy}
DIRTY=${DIRTY:-64M}
CACHE=${CACHE:-256M}
LOG=${LOG:-1G}
DIRECT=${DIRECT:-1}
BIN=$ROOT/bin/dcache

for c in fio python3; do command -v $c >/dev/null || { echo "policy-trace: $c is not installed" >&2; exit 2; }; done
(cd "$ROOT" && go build -o "$BIN" .)

bytes() { python3 -c 'import sys; s=sys.argv[1]; u={"K":1<<10,"M":1<<20,"G":1<<30}; print(int(s[:-1])*u[s[-1]] if s[-1] in u else int(s))' "$1"; }
VOLUME=$(( 4 * $(bytes "$DIRTY") ))

MNT=$WORK/mnt
DATA=$WORK/dcache-data
SEGS=$DATA/backend/segments
OUT=$WORK/out
cleanup() {
	set +e
	[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
	if mountpoint -q "$MNT"; then "$BIN" umount "$MNT" >/dev/null; fi
}
trap cleanup EXIT
cleanup
rm -rf "$WORK"
mkdir -p "$MNT" "$DATA" "$OUT" "$WORK/raw"

echo "# backend sequential write speed: fio 1MiB writes of $((VOLUME >> 20)) MiB + fdatasync on $WORK/raw"
fio --name=backend --directory="$WORK/raw" --rw=write --bs=1M --size="$VOLUME" --ioengine=psync \
	--end_fsync=1 --output-format=json >"$OUT/backend.json"
BACKEND_BPS=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(int(j["jobs"][0]["write"]["bw_bytes"]))' "$OUT/backend.json")
rm -rf "$WORK/raw"
echo "backend: $((BACKEND_BPS >> 20)) MiB/s"

# The kernel's dirty limit for the mount stays at its default
# (fuse.kernel_dirty 0): with dcache's 1GiB, the kernel's page cache would
# take these jobs whole, and the trace would show memory, not dcache's
# throttling.
# shellcheck disable=SC2086
"$BIN" mount -d --data-dir "$DATA" --cache.size "$CACHE" --quota.dirty_bytes "$DIRTY" \
	--log.replicas "$DATA/log:ssd:$LOG" --fuse.kernel_dirty 0 ${MOUNT_ARGS:-} "$MNT"

# backend bytes once a second: what destage appended
sample() {
	while :; do
		printf '%s %s\n' "$(date +%s.%N)" "$(du -sb "$SEGS" 2>/dev/null | cut -f1 || echo 0)"
		sleep 1
	done
}

run() { # name fio-args...
	local name=$1
	shift
	echo
	echo "# $name: $((VOLUME >> 20)) MiB, dirty budget $DIRTY"
	sample >"$OUT/$name.segs" &
	SAMPLER=$!
	local t0
	t0=$(date +%s.%N)
	fio --name="$name" --filename="$MNT/$name" --size="$VOLUME" --ioengine=psync --direct="$DIRECT" \
		--fallocate=none --write_bw_log="$OUT/$name" --log_avg_msec=1000 --per_job_logs=0 \
		--output-format=json "$@" >"$OUT/$name.json"
	# destage finishes after the foreground: keep sampling until the
	# backend stops growing
	local last=-1 cur
	while :; do
		sleep 1
		cur=$(du -sb "$SEGS" | cut -f1)
		[ "$cur" = "$last" ] && break
		last=$cur
	done
	kill "$SAMPLER"
	wait "$SAMPLER" 2>/dev/null || true
	SAMPLER=
	python3 - "$OUT/${name}_bw.log" "$OUT/$name.segs" "$t0" "$BACKEND_BPS" <<'EOF'
import sys, statistics
bwlog, segs, t0, backend = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
fg = []  # (second, MiB/s)
for line in open(bwlog):
    f = [x.strip() for x in line.split(",")]
    if len(f) >= 2:
        fg.append((int(f[0]) / 1000.0, int(f[1]) / 1024.0))  # ms, KiB/s -> MiB/s
samples = [tuple(map(float, l.split())) for l in open(segs) if len(l.split()) == 2]
de = []  # (second since t0, MiB/s destaged in the second before)
for (ta, a), (tb, b) in zip(samples, samples[1:]):
    if tb > ta:
        de.append((tb - t0, (b - a) / (tb - ta) / 2**20))
def destaged(t):
    # the rate of the sample interval that holds second t
    for (ta, a), (tb, b) in zip(samples, samples[1:]):
        if ta - t0 <= t < tb - t0:
            return (b - a) / (tb - ta) / 2**20
    return None
print(f"{'sec':>5} {'foreground MiB/s':>17} {'destage MiB/s':>14}")
end = max([t for t, _ in fg] + [s[0] - t0 for s in samples[-1:]])
for i in range(int(end) + 1):
    f = f"{fg[i][1]:17.1f}" if i < len(fg) else f"{'-':>17}"
    r = destaged(i + 0.5)
    d = f"{r:14.1f}" if r is not None else f"{'-':>14}"
    print(f"{i + 1:5d} {f} {d}")
vals = [v for _, v in fg]
if vals:
    med = statistics.median(vals)
    low = [v < 0.25 * med for v in vals]
    longest = run = 0
    for x in low:
        run = run + 1 if x else 0
        longest = max(longest, run)
    # the last second is partial (the job ends inside it): leave it out of the minimum
    body = vals[:-1] if len(vals) > 2 else vals
    print(f"foreground: median {med:.1f} MiB/s, min {min(body):.1f} MiB/s, min/median {min(body) / med:.2f}, "
          f"longest stretch below 25% of the median: {longest} s")
if len(samples) > 1:
    total = (samples[-1][1] - samples[0][1]) / 2**20
    print(f"destage during the job: {total:.0f} MiB appended to the backend; best interval {max(v for _, v in de):.1f} MiB/s")
EOF
}

run seq --rw=write --bs=1M
run rand --rw=randwrite --bs=4k --randrepeat=0 --norandommap
"$BIN" umount "$MNT" >/dev/null

echo
# The destage measurement has its own volume (DRAIN, default 1G), large
# enough that the fixed cost of a round (syncs, the metadata image) does
# not decide the figure, and its own yardstick: fio writing the same
# volume to the backend's filesystem, 1 MiB writes and an fdatasync.
DRAIN=$(bytes "${DRAIN:-1G}")
echo "# destage throughput: $((DRAIN >> 20)) MiB dirty, destaged by umount"
mkdir -p "$WORK/raw"
fio --name=backend --directory="$WORK/raw" --rw=write --bs=1M --size="$DRAIN" --ioengine=psync \
	--end_fsync=1 --output-format=json >"$OUT/backend-drain.json"
DRAIN_BPS=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(int(j["jobs"][0]["write"]["bw_bytes"]))' "$OUT/backend-drain.json")
rm -rf "$WORK/raw"
DATA2=$WORK/drain-data
# The log is sized so that DRAIN fills less than half of it: at half full
# the engine destages everything, which would leave umount only the rest.
# shellcheck disable=SC2086
"$BIN" mount -d --data-dir "$DATA2" --cache.size "$(( DRAIN * 2 ))" --quota.dirty_bytes "$(( DRAIN * 11 / 10 ))" \
	--log.replicas "$DATA2/log:ssd:$(( DRAIN * 5 / 2 ))" --flush.high_watermark 1 --flush.throttle_watermark 1 \
	--flush.max_dirty_age 1h --flush.sequential_cutoff 0 ${MOUNT_ARGS:-} "$MNT"
fio --name=drain --filename="$MNT/drain" --size="$DRAIN" --rw=write --bs=1M --ioengine=psync --direct="$DIRECT" \
	--fallocate=none --output-format=json >"$OUT/drain.json"
# The log and the backend share this machine's disk: let the log's own
# writeback (the foreground's cost) finish before destage is timed.
sync
"$BIN" umount "$MNT" >/dev/null
python3 - "$DATA2/dcache.log" "$DRAIN_BPS" <<'EOF'
import re, sys
log, backend = open(sys.argv[1]).read(), int(sys.argv[2])
dirty = int(re.search(r'dirty_bytes=(\d+)', re.search(r'.*destaging everything.*', log).group(0)).group(1))
took = re.search(r'destage complete.*took=(\S+)', log).group(1)
def secs(d):
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6}[u]
               for n, u in re.findall(r'([\d.]+)(h|ms|µs|us|m|s)', d))
rate = dirty / secs(took)
print(f"destage: {dirty / 2**20:.0f} MiB in {took} = {rate / 2**20:.1f} MiB/s; backend sequential {backend / 2**20:.1f} MiB/s; "
      f"ratio {rate / backend:.2f}")
EOF
