#!/usr/bin/env bash
# coldread.sh: sequential read of a cold file through dcache (its data only
# in backend segments: written, unmounted, mounted again, the kernel's
# caches dropped) against the same read from the native directory, in one
# run, for each prefetch policy. Prints MiB/s, the ratio to native, and the
# CPU seconds the dcache daemon spent per GiB read (user + system), which
# does not depend on how busy the machine is: on a machine whose CPUs are
# shared, a FUSE daemon waits for a CPU on every request, and the ratio
# then says more about the load than about dcache.
#
#   scripts/coldread.sh                        # 1GiB file, 3 rounds
#   SIZE=256M REPS=5 POLICIES="none sequential" scripts/coldread.sh
#
# Needs root (drop_caches, mount). Env: SIZE (dd size suffixes, default 1G),
# REPS (rounds, default 3), POLICIES (default "none sequential whole-file"),
# WORK (scratch, default /var/tmp/dcache-coldread), BS (read block size,
# default 1M), MOUNT_ARGS (extra flags for dcache mount).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SIZE=${SIZE:-1G}
REPS=${REPS:-3}
POLICIES=${POLICIES:-"none sequential whole-file"}
WORK=${WORK:-/var/tmp/dcache-coldread}
BS=${BS:-1M}
BIN=$ROOT/bin/dcache

[ "$(id -u)" = 0 ] || { echo "coldread: needs root (drop_caches)" >&2; exit 2; }
(cd "$ROOT" && go build -o "$BIN" .)

cleanup() {
	set +e
	if mountpoint -q "$WORK/mnt"; then "$BIN" umount "$WORK/mnt" >/dev/null; fi
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK"/{native,mnt}

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# seconds to read $1 sequentially, cold
readtime() {
	drop
	local t0 t1
	t0=$(date +%s.%N)
	dd if="$1" of=/dev/null bs="$BS" status=none
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}

mount_dc() {
	# shellcheck disable=SC2086
	"$BIN" mount -d --data-dir "$WORK/dcache-data" --cache.size 2GiB --quota.dirty_bytes 1GiB \
		--prefetch.policy "$1" ${MOUNT_ARGS:-} "$WORK/mnt" >/dev/null
}

echo "# writing a $SIZE file of random bytes" >&2
dd if=/dev/urandom of="$WORK/native/f" bs=1M count="$(numfmt --from=iec "$SIZE" | awk '{print int($1/1048576)}')" status=none
bytes=$(stat -c %s "$WORK/native/f")
mount_dc none
cp "$WORK/native/f" "$WORK/mnt/f"
"$BIN" umount "$WORK/mnt" >/dev/null # destages everything

mibs() { echo "$bytes / 1048576 / $1" | bc -l; }
# CPU seconds (user + system) of the running daemon so far
cpu() {
	local pid
	pid=$(head -1 "$WORK/dcache-data/dcache.lock")
	awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat"
}
declare -A sum cpusum
for r in $(seq "$REPS"); do
	t=$(readtime "$WORK/native/f")
	sum[native]=$(echo "${sum[native]:-0} + $(mibs "$t")" | bc -l)
	printf "round %d native      %8.1f MiB/s\n" "$r" "$(mibs "$t")" >&2
	for p in $POLICIES; do
		mount_dc "$p"
		c0=$(cpu)
		t=$(readtime "$WORK/mnt/f")
		c=$(echo "($(cpu) - $c0) * 1073741824 / $bytes" | bc -l)
		cpusum[$p]=$(echo "${cpusum[$p]:-0} + $c" | bc -l)
		cmp -s "$WORK/native/f" "$WORK/mnt/f" || { echo "coldread: dcache returned different bytes" >&2; exit 1; }
		"$BIN" umount "$WORK/mnt" >/dev/null
		sum[$p]=$(echo "${sum[$p]:-0} + $(mibs "$t")" | bc -l)
		printf "round %d %-11s %8.1f MiB/s  daemon %.2f CPU s/GiB\n" "$r" "$p" "$(mibs "$t")" "$c" >&2
	done
done
nat=$(echo "${sum[native]} / $REPS" | bc -l)
printf "%-28s %10s %8s %14s\n" "cold sequential read" "MiB/s" "ratio" "daemon CPU s/GiB"
printf "%-28s %10.1f %8.2f\n" "native" "$nat" 1
for p in $POLICIES; do
	m=$(echo "${sum[$p]} / $REPS" | bc -l)
	printf "%-28s %10.1f %8.2f %14.2f\n" "dcache prefetch=$p" "$m" "$(echo "$m / $nat" | bc -l)" "$(echo "${cpusum[$p]} / $REPS" | bc -l)"
done
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
