#!/usr/bin/env python3
"""Print the fio suite's results side by side, as ratios to the native directory.

Usage: bench_table.py RESULTS_DIR   (holds native.txt, dcache.txt, passthrough.txt)
Throughput jobs are compared by bandwidth, the others by operations per second.
"""
import os
import sys

BW_JOBS = {"seqwrite", "seqread"}


def load(path):
    rows = {}
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            if not line.startswith("job="):
                continue
            kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
            rows[kv["job"]] = kv
    return rows


def metric(job, kv):
    if kv is None:
        return None
    key = "bw_MiBps" if job in BW_JOBS else "iops"
    return float(kv[key])


def main():
    d = sys.argv[1]
    native = load(os.path.join(d, "native.txt"))
    dc = load(os.path.join(d, "dcache.txt"))
    pt = load(os.path.join(d, "passthrough.txt"))
    jobs = list(native) or list(dc)
    print()
    print(f"{'job':<18} {'unit':<6} {'native':>10} {'dcache':>10} {'ratio':>7} {'passthru':>10} {'ratio':>7}")
    for job in jobs:
        unit = "MiB/s" if job in BW_JOBS else "ops/s"
        n, c, p = metric(job, native.get(job)), metric(job, dc.get(job)), metric(job, pt.get(job))

        def fmt(v):
            return f"{v:10.1f}" if v is not None else f"{'-':>10}"

        def ratio(v):
            return f"{v / n:7.2f}" if v is not None and n else f"{'-':>7}"

        print(f"{job:<18} {unit:<6} {fmt(n)} {fmt(c)} {ratio(c)} {fmt(p)} {ratio(p)}")


if __name__ == "__main__":
    main()
