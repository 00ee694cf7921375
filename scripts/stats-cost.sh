#!/usr/bin/env bash
# stats-cost.sh: what statistics cost. Builds dcache twice, with the
# per-request statistics and in-flight tracking (the default build) and with
# them compiled out (-tags nostats), mounts both side by side, and runs the
# same fio 4 KiB random write job against the two mounts at the same time,
# for RT seconds, ROUNDS times. For each daemon it takes the CPU time (user
# and system, from /proc/PID/stat) spent from the start of the jobs to the
# end of their final fsync, per byte the job wrote; destage is held off
# (flush.max_dirty_age 1h, a dirty budget larger than the file) so that the
# runs do the same work, and the kernel's dirty limit for the mounts is its
# default (fuse.kernel_dirty 0), so that the writes reach the daemons as
# they come instead of being merged in the kernel's page cache.
#
# Side by side, both daemons see the same load from the rest of the
# machine, which on a shared machine changes from one run to the next by
# far more than 1%. Both jobs run for the same time, so neither runs alone
# at the end (a daemon's CPU per request differs when it has the machine to
# itself); the figure compared is CPU time per byte written. Statistics are
# user-space work, so the difference of the user CPU times is the figure to
# read; the system time (the kernel's side of FUSE and of the log's page
# cache) is the same work for both but much noisier, and is reported as
# well.
#
# The summary gives the median and mean of the per-round differences, as a
# share of the nostats daemon's total CPU time, and as a share of the whole
# job's (the daemon's and fio's, whose system time is the kernel's side of
# the writes), with a bootstrap 90% interval of the mean. Then, as a
# cross-check that does not depend on the machine's noise: the extra CPU
# per request measured by the Go benchmark (BenchmarkRequestStats, with and
# without statistics, one goroutine) times the FUSE requests of a run, as a
# share of the run's CPU time.
#
#   scripts/stats-cost.sh                     # 12 rounds of 20 s, 256MiB file
#   ROUNDS=24 SIZE=512M RT=30 scripts/stats-cost.sh
#   DIRECT=1 scripts/stats-cost.sh           # O_DIRECT: one FUSE request per 4 KiB write
#   AA=1 scripts/stats-cost.sh               # the default build on both mounts: the method's own error
#
# Env: WORK (scratch directory, default /var/tmp/dcache-stats-cost).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=${WORK:-/var/tmp/dcache-stats-cost}
ROUNDS=${ROUNDS:-12}
SIZE=${SIZE:-256M}
RT=${RT:-20}
DIRECT=${DIRECT:-0}
for c in fio python3; do command -v $c >/dev/null || { echo "stats-cost: $c is not installed (make deps)" >&2; exit 2; }; done

mkdir -p "$ROOT/bin"
# AA=1 mounts the default build twice (an A/A run): the figures then show
# how far the method itself is off.
AA=${AA:-0}
nostats_tags=(-tags nostats)
if [ "$AA" = 1 ]; then nostats_tags=(); fi
(cd "$ROOT" && go build -o bin/dcache-stats . && go build "${nostats_tags[@]}" -o bin/dcache-nostats .)
rm -rf "$WORK"
mkdir -p "$WORK"
RES=$WORK/results.txt
: >"$RES"
VARIANTS="stats nostats"

cleanup() {
	set +e
	for v in $VARIANTS; do
		if mountpoint -q "$WORK/$v/mnt"; then "$ROOT/bin/dcache-$v" umount "$WORK/$v/mnt" >/dev/null; fi
	done
}
trap cleanup EXIT

cpu() { awk '{print $14, $15}' "/proc/$1/stat"; } # user and system ticks
hz=$(getconf CLK_TCK)

for r in $(seq "$ROUNDS"); do
	# Which build is mounted and started first alternates, so that an
	# advantage of going first falls on both alike.
	order=$VARIANTS
	if ((r % 2 == 0)); then order="nostats stats"; fi
	declare -A pid c0
	for v in $order; do
		rm -rf "${WORK:?}/$v"
		mkdir -p "$WORK/$v/mnt"
		"$ROOT/bin/dcache-$v" mount -d --data-dir "$WORK/$v/data" --cache.size 1GiB --quota.dirty_bytes 768MiB \
			--flush.max_dirty_age 1h --fuse.kernel_dirty 0 --log.replicas "$WORK/$v/data/log:ssd:2GiB" "$WORK/$v/mnt" >/dev/null
		pid[$v]=$(head -1 "$WORK/$v/data/dcache.lock")
	done
	for v in $VARIANTS; do c0[$v]=$(cpu "${pid[$v]}"); done
	jobs=()
	for v in $order; do
		fio --name=randwrite --rw=randwrite --bs=4k --ioengine=psync --iodepth=1 --fallocate=none \
			--filename="$WORK/$v/mnt/data" --size="$SIZE" --time_based --runtime="$RT" --randrepeat=1 --end_fsync=1 --direct="$DIRECT" \
			--output-format=json >"$WORK/fio-$v-$r.json" &
		jobs+=($!)
	done
	wait "${jobs[@]}"
	line="round=$r"
	for v in $VARIANTS; do
		read -r u s <<<"$(cpu "${pid[$v]}")"
		read -r u0 s0 <<<"${c0[$v]}"
		# MiB the job wrote, and fio's own CPU time in ms.
		read -r mib fcpu <<<"$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(j["write"]["io_bytes"]>>20, int((j["usr_cpu"]+j["sys_cpu"])*j["job_runtime"]/100))' "$WORK/fio-$v-$r.json")"
		line+=" $v=$(((u - u0) * 1000 / hz)),$(((s - s0) * 1000 / hz)),$mib,$fcpu"
	done
	# FUSE requests of the round: the stats build counts them; the nostats
	# build serves the same job, so its requests are taken to be the same.
	reqs=$(python3 -c 'import json,sys; print(sum(o["count"] for o in json.load(open(sys.argv[1]))["windows"]["since_mount"]["operations"].values()))' "$WORK/stats/mnt/.dcache/stats.json")
	echo "$line requests=$reqs (user ms, system ms, MiB written, fio CPU ms)" | tee -a "$RES"
	for v in $VARIANTS; do "$ROOT/bin/dcache-$v" umount "$WORK/$v/mnt" >/dev/null; done
done

# The Go benchmark of one request's statistics, with and without them.
bench() {
	(cd "$ROOT/fs" && go test "$@" -run '^$' -bench '^BenchmarkRequestStats$' -cpu 1 -count 5 .) |
		awk '/^BenchmarkRequestStats/ {print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
ns_stats=$(bench)
ns_nostats=$(bench "${nostats_tags[@]}")

python3 - "$RES" "$ns_stats" "$ns_nostats" <<'PY'
import random, re, statistics, sys
user, total, job, cpu_n, reqs = [], [], [], [], []
for line in open(sys.argv[1]):
    m = re.match(r"round=\d+ stats=(\d+),(\d+),(\d+),(\d+) nostats=(\d+),(\d+),(\d+),(\d+) requests=(\d+)", line)
    if not m:
        continue
    su, ss, sb, sf, nu, ns, nb, nf, n = map(int, m.groups())
    # CPU per MiB written; the nostats daemon's figures scaled to the
    # stats job's bytes.
    k = sb / nb
    nu, ns, nf = nu * k, ns * k, nf * k
    user.append(100 * (su - nu) / (nu + ns))
    total.append(100 * ((su + ss) - (nu + ns)) / (nu + ns))
    job.append(100 * (su - nu) / (nu + ns + nf))
    cpu_n.append((nu + ns) / 1000)
    reqs.append(n)
random.seed(1)
def summary(name, d):
    boot = sorted(statistics.mean(random.choices(d, k=len(d))) for _ in range(4000))
    print(f"{name}: median {statistics.median(d):+.2f}%, mean {statistics.mean(d):+.2f}% "
          f"(90% interval of the mean {boot[200]:+.2f}% .. {boot[3799]:+.2f}%)")
    print(f"  rounds: {[round(x, 1) for x in d]}")
print(f"{len(user)} rounds; nostats daemon CPU per round: median {statistics.median(cpu_n):.2f} s; "
      f"FUSE requests per round: median {statistics.median(reqs):.0f}")
summary("user CPU difference (stats - nostats), share of the nostats daemon's CPU", user)
summary("total CPU difference (user + system; noisier)", total)
summary("user CPU difference as a share of the job's CPU (daemon + fio)", job)
ns_s, ns_n = float(sys.argv[2]), float(sys.argv[3])
per = (ns_s - ns_n) * 1e-9 * statistics.median(reqs)
print(f"benchmark: {ns_s:.1f} ns per request with statistics, {ns_n:.1f} without; "
      f"x {statistics.median(reqs):.0f} requests = {1e3 * per:.0f} ms, "
      f"{100 * per / statistics.median(cpu_n):.2f}% of the nostats daemon's CPU")
PY
