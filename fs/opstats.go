package fs

import (
	"context"
	"time"

	"github.com/dcache/dcache/internal/inflight"
	"github.com/dcache/dcache/internal/metrics"
)

// op names a FUSE request kind, for statistics and the in-flight table.
type op uint8

const (
	opLookup op = iota
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
	opRead
	opWrite
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
	"lookup", "getattr", "setattr", "mknod", "mkdir", "symlink", "link", "unlink", "rmdir", "rename",
	"readlink", "access", "create", "open", "read", "write", "fsync", "release", "opendir", "readdir",
	"fsyncdir", "statfs", "getxattr", "listxattr", "setxattr", "removexattr", "fallocate", "lseek",
}

func (o op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return "unknown"
}

// opStat is one request kind's counters.
type opStat struct {
	count metrics.Counter
	bytes metrics.Counter // data bytes read or written
	lat   metrics.Histogram
}

// opStats are the filesystem layer's counters and its in-flight table.
type opStats struct {
	ops [numOps]opStat
	tab *inflight.Table
}

// maxInflight sizes the in-flight table: the kernel sends at most
// max_background (64) background requests, plus one per thread blocked in
// a synchronous call.
const maxInflight = 512

func newOpStats() *opStats { return &opStats{tab: inflight.NewTable(maxInflight)} }

// req is one request being served.
type req struct {
	ctx   context.Context
	slot  *inflight.Slot
	start int64
	op    op
}

// begin starts tracking a request: it is counted, timed and listed in
// .dcache/inflight until end. ctx is the request's context, which carries
// its stage to the layers below.
func (f *FS) begin(o op, ino, off uint64, cancel <-chan struct{}) req {
	if !statsOn {
		return req{ctx: cancelCtx(cancel)}
	}
	now := inflight.Now()
	r := req{start: now, op: o, ctx: cancelCtx(cancel)}
	if s := f.stats.tab.Begin(uint32(o), ino, off, now); s != nil {
		r.slot = s
		r.ctx = s.Bind(cancel)
	}
	return r
}

// end records a request's latency and data bytes.
func (f *FS) end(r *req, bytes int64) {
	if !statsOn {
		return
	}
	f.stats.tab.End(r.slot)
	st := &f.stats.ops[r.op]
	st.count.Add(1)
	if bytes > 0 {
		st.bytes.Add(bytes)
	}
	st.lat.Observe(time.Duration(inflight.Now() - r.start))
}
