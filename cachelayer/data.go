package cachelayer

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dcache/dcache/backend"
)

// miss is a block a read could not serve from the cache: it is in a
// backend record.
type miss struct {
	blk uint64
	x   Extent
}

// readLocked copies what the cache holds of [off, off+len(dst)) of ino into
// dst (zeros for holes) and returns the blocks that must come from the
// backend.
func (e *Engine) readLocked(ino Ino, off uint64, dst []byte) []miss {
	if len(dst) == 0 {
		return nil
	}
	end := off + uint64(len(dst))
	first, last := off/BlockSize, (end-1)/BlockSize
	var misses []miss
	next := first // next block not yet served
	serveGap := func(upTo uint64) {
		for ; next < upTo; next++ {
			bs := next * BlockSize
			lo, hi := max(bs, off), min(bs+BlockSize, end)
			if x, ok := e.st.extentAt(ino, bs); ok {
				if misses == nil {
					misses = make([]miss, 0, last-next+1) // a cold range misses all through
				}
				misses = append(misses, miss{blk: next, x: x})
				continue
			}
			clear(dst[lo-off : hi-off])
		}
	}
	e.pages.Ascend(pageRef{Ino: ino, Blk: first}, func(r pageRef) bool {
		if r.Ino != ino || r.Blk > last {
			return false
		}
		serveGap(r.Blk)
		bs := r.Blk * BlockSize
		lo, hi := max(bs, off), min(bs+BlockSize, end)
		copy(dst[lo-off:hi-off], e.pool.data(r.Page)[lo-bs:hi-bs])
		e.pool.touch(r.Page)
		e.prefetchedReadLocked(r.Page)
		next = r.Blk + 1
		return true
	})
	serveGap(last + 1)
	e.stats.ReadHits.Add(int64(last-first+1) - int64(len(misses)))
	return misses
}

// Read reads up to len(dst) bytes at off; it returns fewer at end of file.
func (e *Engine) Read(ctx context.Context, ino Ino, off uint64, dst []byte) (int, error) {
	for first := true; ; first = false {
		e.mu.Lock()
		in, ok := e.st.inode(ino)
		if !ok {
			e.mu.Unlock()
			return 0, ErrNotExist
		}
		if in.IsDir() {
			e.mu.Unlock()
			return 0, ErrIsDir
		}
		if off >= in.Size {
			e.mu.Unlock()
			return 0, nil
		}
		n := min(uint64(len(dst)), in.Size-off)
		misses := e.readLocked(ino, off, dst[:n])
		e.mu.Unlock()
		if first {
			e.noteRead(ino, off, n, in.Size)
		}
		if len(misses) == 0 {
			e.stats.BytesRead.Add(int64(n))
			return int(n), nil
		}
		end := e.beginLoad(ino, misses[0].blk, misses[len(misses)-1].blk+1)
		done, err := e.readMisses(ctx, ino, off, dst[:n], misses)
		end()
		if err != nil {
			return 0, err
		}
		if done {
			e.stats.BytesRead.Add(int64(n))
			return int(n), nil
		}
		// The object changed under the read (truncate, punch): start over.
	}
}

// payloadBufs recycles write-record payloads (up to a chunk plus its
// header): the log copies a record into its own buffer when it is
// committed, so the payload is free again once the op returns.
var payloadBufs = newBufPool(8<<10, 64<<10, maxWriteChunk+256)

// maxReadSpan bounds one backend read of adjacent records.
const maxReadSpan = 1 << 20

// spanBufs recycles backend read buffers.
var spanBufs = newBufPool(64<<10, maxReadSpan)

// loadRecords reads the distinct records behind misses from the backend,
// checksum verified, without the lock. Records that lie back to back in a
// segment (a destaged sequential file does) are read with one call. Reads
// on behalf of a reader count as ReadMisses; a prefetch (nil) counts its
// own.
func (e *Engine) loadRecords(misses []miss, count *atomic.Int64) (map[backend.Addr][]byte, []*[]byte, error) {
	recs := make(map[backend.Addr][]byte)
	var addrs []backend.Addr
	for _, m := range misses {
		if _, ok := recs[m.x.Addr]; !ok {
			recs[m.x.Addr] = nil
			addrs = append(addrs, m.x.Addr)
		}
	}
	slices.SortFunc(addrs, func(a, b backend.Addr) int {
		if a.Segment != b.Segment {
			return cmp.Compare(a.Segment, b.Segment)
		}
		return cmp.Compare(a.Off, b.Off)
	})
	var bufs []*[]byte
	fail := func(err error) (map[backend.Addr][]byte, []*[]byte, error) {
		for _, b := range bufs {
			spanBufs.put(b)
		}
		return nil, nil, fmt.Errorf("cachelayer: read backend: %w", err)
	}
	for i := 0; i < len(addrs); {
		j := i + 1
		for j < len(addrs) && addrs[j].Segment == addrs[i].Segment && addrs[j].Off == addrs[j-1].End() &&
			addrs[j].End()-addrs[i].Off <= maxReadSpan {
			j++
		}
		span := addrs[j-1].End() - addrs[i].Off
		bp := spanBufs.get(int(span))
		bufs = append(bufs, bp)
		buf := *bp
		var err error
		if j-i == 1 {
			err = e.be.Read(addrs[i], buf)
		} else {
			err = e.be.ReadRange(addrs[i:j], buf)
		}
		if err != nil {
			return fail(err)
		}
		for _, a := range addrs[i:j] {
			rel := a.Off - addrs[i].Off
			recs[a] = buf[rel : rel+uint64(a.Len)]
		}
		if count != nil {
			count.Add(int64(j - i))
		}
		i = j
	}
	return recs, bufs, nil
}

// readMisses fills dst's missed blocks from their backend records, caching
// them. It reports false when the object changed meanwhile.
func (e *Engine) readMisses(ctx context.Context, ino Ino, off uint64, dst []byte, misses []miss) (bool, error) {
	recs, bufs, err := e.loadRecords(misses, &e.stats.ReadMisses)
	if err != nil {
		if e.missesMoved(ino, misses) {
			return false, nil // cleaning moved the data: look again
		}
		return false, err
	}
	defer func() {
		for _, b := range bufs {
			spanBufs.put(b)
		}
	}()
	end := off + uint64(len(dst))
	starts := recordStarts(misses)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range misses {
		bs := m.blk * BlockSize
		lo, hi := max(bs, off), min(bs+BlockSize, end)
		if r, ok := e.pages.Get(pageRef{Ino: ino, Blk: m.blk}); ok {
			copy(dst[lo-off:hi-off], e.pool.data(r.Page)[lo-bs:hi-bs])
			e.prefetchedReadLocked(r.Page)
			continue
		}
		x, ok := e.st.extentAt(ino, bs)
		if !ok || x.Addr != m.x.Addr || x.Off-uint64(x.Skip) != m.x.Off-uint64(m.x.Skip) {
			return false, nil
		}
		rec := recs[m.x.Addr]
		at := uint64(x.Skip) + (bs - x.Off)
		copy(dst[lo-off:hi-off], rec[at+(lo-bs):at+(hi-bs)])
	}
	for a, rec := range recs {
		e.cacheRecordLocked(ino, a, starts[a], rec, false)
	}
	return true, nil
}

// cacheRecordLocked keeps clean copies of the blocks of ino that the live
// extent map still maps to record a, when pages are to be had without
// touching dirty data, marked as prefetched when pf is set. It returns
// how many blocks it cached. A record holds one contiguous file range of
// one object, so its pieces are within [start, start+len), where start is
// x.Off-x.Skip of any extent x that maps a piece of it (recordStarts).
func (e *Engine) cacheRecordLocked(ino Ino, a backend.Addr, start uint64, rec []byte, pf bool) int {
	var xs []Extent
	n := 0
	e.st.extentsIn(ino, start, start+uint64(a.Len), func(x Extent) bool {
		if x.Addr == a {
			xs = append(xs, x)
		}
		return true
	})
	for _, x := range xs {
		for b := x.Off / BlockSize; b < x.End()/BlockSize; b++ {
			if _, ok := e.pages.Get(pageRef{Ino: ino, Blk: b}); ok {
				continue
			}
			if e.pool.available() == 0 {
				return n
			}
			p := e.allocPageLocked(ino, b, pageClean, true)
			at := uint64(x.Skip) + (b*BlockSize - x.Off)
			copy(e.pool.data(p), rec[at:at+BlockSize])
			e.pool.meta[p].prefetched = pf
			n++
		}
	}
	return n
}

// recordStarts gives the file offset of the start of each record behind
// misses (see cacheRecordLocked).
func recordStarts(misses []miss) map[backend.Addr]uint64 {
	s := make(map[backend.Addr]uint64)
	for _, m := range misses {
		s[m.x.Addr] = m.x.Off - uint64(m.x.Skip)
	}
	return s
}

// fetchBlocks brings destaged blocks of ino into the cache (for
// read-modify-write of partial blocks).
func (e *Engine) fetchBlocks(ctx context.Context, ino Ino, blks []uint64) error {
	e.mu.Lock()
	var misses []miss
	for _, b := range blks {
		if _, ok := e.pages.Get(pageRef{Ino: ino, Blk: b}); ok {
			continue
		}
		if x, ok := e.st.extentAt(ino, b*BlockSize); ok {
			misses = append(misses, miss{blk: b, x: x})
		}
	}
	need := len(misses)
	avail := e.pool.available()
	e.mu.Unlock()
	if need == 0 {
		return nil
	}
	if avail < need {
		if err := e.waitPages(ctx, need); err != nil {
			return err
		}
	}
	recs, bufs, err := e.loadRecords(misses, &e.stats.ReadMisses)
	if err != nil {
		if e.missesMoved(ino, misses) {
			return nil // cleaning moved the data: the caller looks again
		}
		return err
	}
	defer func() {
		for _, b := range bufs {
			spanBufs.put(b)
		}
	}()
	starts := recordStarts(misses)
	e.mu.Lock()
	defer e.mu.Unlock()
	for a, rec := range recs {
		e.cacheRecordLocked(ino, a, starts[a], rec, false)
	}
	return nil
}

// maxWriteChunk is the most one logged write op carries; larger writes are
// split (FUSE sends at most max_write, 1 MiB, at a time anyway).
const maxWriteChunk = 1 << 20

// Write writes data at off, as wo says.
func (e *Engine) Write(ctx context.Context, ino Ino, off uint64, data []byte, wo WriteOpts) (int, error) {
	if uint64(len(data)) > MaxFileSize || off+uint64(len(data)) > MaxFileSize {
		return 0, ErrTooBig
	}
	if err := e.writeQuota(ino, off+uint64(len(data))); err != nil {
		return 0, err // a write past a quota changes nothing, not even in part
	}
	chunk := uint64(min(maxWriteChunk, max(BlockSize, e.cfg.DirtyBytes/4)))
	done := 0
	for done < len(data) {
		n := min(len(data)-done, int(chunk-(off+uint64(done))%BlockSize))
		if _, err := e.writeChunk(ctx, ino, off+uint64(done), data[done:done+n], wo); err != nil {
			if done > 0 {
				return done, nil
			}
			return 0, err
		}
		done += n
	}
	return done, nil
}

func (e *Engine) writeChunk(ctx context.Context, ino Ino, off uint64, data []byte, wo WriteOpts) (int, error) {
	n := uint64(len(data))
	if n == 0 {
		return 0, nil
	}
	blocks := int((off+n-1)/BlockSize - off/BlockSize + 1)
	mode := e.Mode() // one mode for the whole write, whatever SetMode does meanwhile
	if err := e.throttle(ctx, blocks); err != nil {
		return 0, err
	}
	defer e.unreserve(blocks)
	m := mutation{kind: mWrite, ino: ino, off: off, value: data, time: now()}
	var flags uint8
	if wo.KillSuidGid {
		flags |= writeKillSuid
	}
	if wo.KeepTimes {
		flags |= writeKeepTimes
	}
	m.flags = flags
	bp := payloadBufs.get(len(data) + 256)
	*bp = appendMutation((*bp)[:0], &m)
	defer payloadBufs.put(bp) // the log copies the record at Commit
	rec := &LogRecord{Type: uint8(OpWrite), Flags: flags, Obj: uint64(ino), Off: off, Len: uint32(n), Payload: *bp}
	lsn, err := e.run(ctx, 0, rec, func() (*txn, error) {
		in, ok := e.st.inode(ino)
		if !ok {
			return nil, ErrNotExist
		}
		if in.IsDir() {
			return nil, ErrIsDir
		}
		if !in.IsReg() {
			return nil, ErrInvalid
		}
		if err := e.quotaGrowLocked(ino, in.Size, off+n); err != nil {
			return nil, err
		}
		fetch, short := e.writeNeedsLocked(ino, off, n)
		if len(fetch) > 0 {
			return nil, &errNeedFetch{ino: ino, blks: fetch}
		}
		if short > 0 {
			return nil, &errNeedPages{n: short}
		}
		return &txn{op: OpWrite, muts: []mutation{m}}, nil
	})
	if err != nil {
		return 0, err
	}
	e.stats.BytesWritten.Add(int64(n))
	switch mode {
	case ModeWriteThrough, ModeWriteAround:
		// The write has taken effect (it is logged): whatever happens
		// to the wait, it reports success.
		e.stats.ThroughWrites.Add(1)
		if e.waitBackend(ctx, lsn) && mode == ModeWriteAround {
			e.mu.Lock()
			e.invalidateCleanLocked(ino, off, n)
			e.mu.Unlock()
		}
		if e.backendLSN.Load() >= lsn {
			return int(n), nil // durable: the log sync below is moot
		}
	default:
		e.mu.Lock()
		if e.noteStreamLocked(ino, off, n) {
			e.stats.StreamBytes.Add(int64(n))
		}
		e.mu.Unlock()
	}
	if wo.Sync && e.cfg.Sync != SyncAlways {
		// The bytes are written: not cut short by an interruption (see run).
		if err := e.wal.Sync(context.WithoutCancel(ctx), lsn); err != nil {
			return 0, e.logErr(err)
		}
	}
	return int(n), nil
}

// dirtyLimit is the dirty budget in pages.
func (e *Engine) dirtyLimit() int { return int(e.cfg.DirtyBytes / BlockSize) }

// throttle waits until blocks more dirty pages fit in the dirty budget and
// reserves them: above the throttle watermark it first delays the write in
// proportion (throttleDelayLocked), and at the full budget it waits for
// room. A write never fails for lack of room: it waits for destage.
func (e *Engine) throttle(ctx context.Context, blocks int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	limit := e.dirtyLimit()
	used := e.pool.nDirty + e.reserved + blocks
	if used > int(float64(limit)*e.cfg.HighWatermark) {
		e.kickLocked()
	}
	var start time.Time
	if d := e.throttleDelayLocked(float64(used)/float64(limit), blocks); d > 0 {
		start = time.Now()
		e.stats.ThrottleWaits.Add(1)
		e.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			e.mu.Lock()
			e.stats.ThrottleWaitNs.Add(int64(time.Since(start)))
			return ctx.Err()
		}
		e.mu.Lock()
	}
	for e.pool.nDirty+e.reserved+blocks > limit && e.pool.nDirty+e.reserved > 0 {
		if start.IsZero() {
			start = time.Now()
			e.stats.ThrottleWaits.Add(1)
		}
		if err := e.waitRoomLocked(ctx); err != nil {
			return err
		}
	}
	if !start.IsZero() {
		e.stats.ThrottleWaitNs.Add(int64(time.Since(start)))
	}
	e.reserved += blocks
	return nil
}

func (e *Engine) unreserve(blocks int) {
	e.mu.Lock()
	e.reserved -= blocks
	e.mu.Unlock()
}

// waitPages waits until n pages can be allocated.
func (e *Engine) waitPages(ctx context.Context, n int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.pool.available() < n {
		if e.pool.available()+e.pool.nDirty < n {
			return fmt.Errorf("cachelayer: %d pages needed, the cache has %d: %w", n, e.pool.pages(), ErrNoSpace)
		}
		e.kickLocked()
		if err := e.waitRoomLocked(ctx); err != nil {
			return err
		}
	}
	return nil
}

// waitRoomLocked releases mu until destage makes room (or a second passes,
// or ctx ends) and takes it again.
func (e *Engine) waitRoomLocked(ctx context.Context) error {
	ch := e.roomCh
	e.mu.Unlock()
	defer e.mu.Lock()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	if e.isClosed() {
		return ErrClosed
	}
	return nil
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// signalRoomLocked wakes everyone waiting for room.
func (e *Engine) signalRoomLocked() {
	close(e.roomCh)
	e.roomCh = make(chan struct{})
}

// kickLocked asks the flusher for a destage round.
func (e *Engine) kickLocked() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}
