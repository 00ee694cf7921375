#!/usr/bin/env bash
# mem.sh: measure the daemon's resident memory against the budget
# cache.size + 15% + 300 bytes per object.
#
#   scripts/mem.sh [OBJECTS] [CACHE_SIZE]     # defaults: 200000 objects, 256MiB
#
# It mounts dcache, fills the cache with one large file (so the page pool is
# in use), creates OBJECTS small files in directories of 1000, flushes, and
# prints VmRSS and VmHWM of the daemon with the budget they are held to.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=${1:-200000}
CACHE=${2:-256MiB}
WORK=${WORK:-/var/tmp/dcache-mem}
BIN=$ROOT/bin/dcache
(cd "$ROOT" && go build -o "$BIN" .)
rm -rf "$WORK"
mkdir -p "$WORK/mnt"
cleanup() { mountpoint -q "$WORK/mnt" && "$BIN" umount "$WORK/mnt" >/dev/null; }
trap cleanup EXIT
"$BIN" mount -d --data-dir "$WORK/data" --cache.size "$CACHE" --quota.dirty_bytes "$CACHE" "$WORK/mnt" >/dev/null
pid=$(head -1 "$WORK/data/dcache.lock")
cache_bytes=$(python3 -c "import sys; u={'KiB':1<<10,'MiB':1<<20,'GiB':1<<30}; s=sys.argv[1]; print(int(s[:-3])*u[s[-3:]])" "$CACHE")

# Fill the page pool with data, then create the objects.
head -c "$cache_bytes" /dev/urandom > "$WORK/mnt/fill"
python3 - "$WORK/mnt/tree" "$N" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, "file-%07d" % i), "wb") as f:
        f.write(b"x" * 100)
EOF
sync
sleep 2
objects=$((N + N / 1000 + 3))
read -r rss hwm < <(awk '/VmRSS/{r=$2} /VmHWM/{h=$2} END{print r*1024, h*1024}' "/proc/$pid/status")
python3 - "$cache_bytes" "$objects" "$rss" "$hwm" <<'EOF'
import sys
cache, objs, rss, hwm = map(int, sys.argv[1:])
budget = cache * 1.15 + 300 * objs
print(f"objects={objs} cache={cache/2**20:.0f}MiB rss={rss/2**20:.1f}MiB peak={hwm/2**20:.1f}MiB "
      f"budget={budget/2**20:.1f}MiB rss/budget={rss/budget:.2f} peak/budget={hwm/budget:.2f} "
      f"bytes/object beyond cache={(rss-cache)/objs:.0f}")
EOF
