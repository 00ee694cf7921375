package fs

import (
	"context"
	"time"
	"unsafe"

	"github.com/dcache/dcache/internal/inflight"
	"github.com/dcache/dcache/internal/metrics"
)

// op names a FUSE request kind, for statistics and the in-flight table.
type op uint8

const (
	// The data ops first: see statShard.
	opWrite op = iota
	opRead
	opLookup
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opSymlink
	opLink
	opUnlink
	opRmdir
	opRename
	opReadlink
	opAccess
	opCreate
	opOpen
	opFsync
	opRelease
	opOpendir
	opReaddir
	opFsyncdir
	opStatfs
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opFallocate
	opLseek
	numOps
)

var opNames = [numOps]string{
	"write", "read", "lookup", "getattr", "setattr", "mknod", "mkdir", "symlink", "link", "unlink", "rmdir", "rename",
	"readlink", "access", "create", "open", "fsync", "release", "opendir", "readdir",
	"fsyncdir", "statfs", "getxattr", "listxattr", "setxattr", "removexattr", "fallocate", "lseek",
}

func (o op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return "unknown"
}

// opStat is one request kind's counters: the latency histogram, which
// also counts the requests and sums the data bytes they moved. Padded to
// whole cache lines, so that the histogram's hot line (see
// metrics.Histogram) is not shared with another kind's.
type opStat struct {
	lat metrics.Histogram
	_   [64 - unsafe.Sizeof(metrics.Histogram{})%64]byte
}

// statShard is one CPU's share of the statistics: its in-flight slots and
// its per-kind histograms, together, so that a request's bookkeeping
// touches one page (after the syscall that read the request, every page
// costs a TLB refill on a kernel with page-table isolation and no PCIDs).
// The slots come first and the kinds are numbered with the data ops
// first, so that slot 0 and the read and write histograms share the
// shard's first page; the size is whole pages, so that shards of a
// page-aligned array start on a page.
type statShard struct {
	slots inflight.Shard
	ops   [numOps]opStat
	_     [(pageSize - (unsafe.Sizeof(inflight.Shard{})+uintptr(numOps)*unsafe.Sizeof(opStat{}))%pageSize) % pageSize]byte
}

const pageSize = 4096

// opStats are the filesystem layer's counters and its in-flight table,
// in shards: a request writes the shard its CPU picked (metrics.Affinity),
// so that the counters' lines do not move between CPUs on every request.
type opStats struct {
	// The affinity and the table are held here, not behind pointers: a
	// request reads this struct and its shard's page only.
	aff    metrics.Affinity
	shards []statShard
	tab    inflight.Table
}

// snapshot returns one request kind's figures, summed over the shards.
func (s *opStats) snapshot(o op) metrics.HistSnapshot {
	var h metrics.HistSnapshot
	for i := range s.shards {
		h.Merge(s.shards[i].ops[o].lat.Snapshot())
	}
	return h
}

// maxInflight sizes the in-flight table's spill area: the kernel sends at
// most max_background (64) background requests, plus one per thread
// blocked in a synchronous call.
const maxInflight = 512

func newOpStats() *opStats {
	n := metrics.DefaultShards()
	s := &opStats{aff: *metrics.NewAffinity(n), shards: make([]statShard, n)}
	ps := make([]*inflight.Shard, n)
	for i := range s.shards {
		ps[i] = &s.shards[i].slots
	}
	s.tab.Init(ps, maxInflight)
	return s
}

// req is one request being served.
type req struct {
	ctx   context.Context
	slot  *inflight.Slot
	start int64
	op    op
	shard uint8
}

// begin starts tracking a request: it is counted, timed and listed in
// .dcache/inflight until end. ctx is the request's context, which carries
// its stage to the layers below.
func (f *FS) begin(o op, ino, off uint64, cancel <-chan struct{}) req {
	if !statsOn {
		return req{ctx: cancelCtx(cancel)}
	}
	now := inflight.Now()
	shard := f.stats.aff.Pick()
	r := req{start: now, op: o, shard: uint8(shard)}
	if r.slot = f.stats.tab.Begin(&f.stats.shards[shard].slots, uint32(o), ino, off, now); r.slot != nil {
		r.ctx = r.slot.Bind(cancel)
	} else {
		r.ctx = cancelCtx(cancel) // the table is full: served untracked
	}
	return r
}

// end records a request's latency and data bytes.
func (f *FS) end(r *req, bytes int64) {
	if !statsOn {
		return
	}
	f.stats.tab.End(r.slot)
	f.stats.shards[r.shard].ops[r.op].lat.ObserveN(time.Duration(inflight.Now()-r.start), max(bytes, 0))
}
