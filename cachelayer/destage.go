package cachelayer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/backend"
)

// destageScope says which dirty pages a round takes.
type destageScope int

const (
	destageAll      destageScope = iota // every page dirty at the cut
	destageToLow                        // oldest first, down to the low watermark
	destageMetaOnly                     // no data: persist metadata so the log can be trimmed
	destageStream                       // the pages of sequential streams past the cutoff
)

func (s destageScope) String() string {
	switch s {
	case destageAll:
		return "all"
	case destageToLow:
		return "to-low-watermark"
	case destageMetaOnly:
		return "metadata"
	case destageStream:
		return "stream"
	}
	return fmt.Sprintf("destageScope(%d)", int(s))
}

// blockKey names one block of one object.
type blockKey struct {
	ino Ino
	blk uint64
}

// copied is one run of blocks copied out of the cache into a record.
type copied struct {
	ino   Ino
	blk   uint64 // first block
	pages []pageCopy
	addr  backend.Addr
}

// pageCopy says which page allocation and which version of it was copied.
type pageCopy struct {
	page uint32
	seq  uint32
	ver  uint32
}

// full-checkpoint policy: a new checkpoint replaces the deltas once they
// outgrow the last checkpoint (and at least this much).
const minDeltaBeforeCheckpoint = 16 << 20

// metaRoomMargin is the room kept free in a fixed-size meta space beyond
// twice the live metadata (see metaRoomShort).
const metaRoomMargin = 1 << 20

// destage runs one round. persist=false (used while replaying the log)
// only moves data and keeps everything else for the round after recovery.
func (e *Engine) destage(ctx context.Context, scope destageScope, persist bool) error {
	return e.destageRound(ctx, scope, persist, nil)
}

// destageRound runs one round; a non-nil only limits it to the dirty pages
// of those objects (scope destageAll), leaving the others dirty.
func (e *Engine) destageRound(ctx context.Context, scope destageScope, persist bool, only map[Ino]struct{}) error {
	e.destageMu.Lock()
	defer e.destageMu.Unlock()
	return e.destageOnlyLocked(ctx, scope, persist, only)
}

// destageLocked runs one round with destageMu held.
func (e *Engine) destageLocked(ctx context.Context, scope destageScope, persist bool) error {
	return e.destageOnlyLocked(ctx, scope, persist, nil)
}

// destageOnlyLocked is destageRound with e.destageMu held.
func (e *Engine) destageOnlyLocked(ctx context.Context, scope destageScope, persist bool, only map[Ino]struct{}) (err error) {
	start := time.Now()
	e.roundStart.Store(start.UnixNano())
	defer func() {
		e.roundStart.Store(0)
		e.roundTotal.Store(0)
		e.roundDone.Store(0)
	}()

	// 1. The cut.
	e.mu.Lock()
	cutLSN := e.lastLSN
	cut := e.st.copy()
	dq := e.dirtyQ.Copy()
	target := 0
	switch scope {
	case destageAll:
		target = dq.Len()
	case destageToLow:
		low := int(float64(e.dirtyLimit()) * e.cfg.LowWatermark)
		target = min(max(0, e.pool.nDirty-low), e.roundPages())
	case destageStream:
		target = e.roundPages()
	}
	changed := e.changed
	e.changed = newChangeSet()
	e.mu.Unlock()

	// The log must be replayed from the oldest op that made a page dirty
	// which this round leaves dirty: the first page of the cut's queue not
	// picked. It must come from the cut, not from the live queue after the
	// round: a page dirty at the cut can be dropped after the copy (an
	// unlink, a truncate) by an op later than what this round makes
	// durable, and the image must still be completed by replay up to it.
	picks := make([]blockKey, 0, target)
	replay := cutLSN + 1
	dq.Scan(func(k dirtyKey) bool {
		take := len(picks) < target
		switch {
		case only != nil:
			_, take = only[k.Ino]
		case scope == destageStream:
			take = take && k.Stream
		}
		if take {
			picks = append(picks, blockKey{k.Ino, k.Blk})
			return true
		}
		replay = min(replay, k.LSN)
		// Oldest first: the queue is in LSN order, so the first page
		// left ends the scan, except for a stream round, which takes
		// stream pages wherever they are, and a round limited to some
		// objects, which takes theirs.
		return scope == destageStream || only != nil
	})
	slices.SortFunc(picks, func(a, b blockKey) int {
		if c := cmp.Compare(a.ino, b.ino); c != 0 {
			return c
		}
		return cmp.Compare(a.blk, b.blk)
	})

	giveBack := func() {
		e.mu.Lock()
		e.changed.merge(changed)
		e.mu.Unlock()
	}
	if len(picks) > 0 {
		e.roundTotal.Store(int64(len(picks)) * BlockSize)
		e.mu.Lock()
		e.noteAttemptLocked(picks)
		e.mu.Unlock()
		defer func() {
			if err != nil {
				e.mu.Lock()
				e.noteFailureLocked(picks, err)
				e.mu.Unlock()
			}
		}()
	}

	// 2. Copy the chosen pages into records and append them to the backend.
	copyStart := time.Now()
	runs, gone, copyLSN, bytes, err := e.copyOut(picks)
	if e.afterCopy != nil {
		e.afterCopy() // tests: ops landing between the copy and the repointing
	}
	copied := time.Since(copyStart)
	if err == nil && len(runs) > 0 {
		err = e.be.Sync()
	}
	synced := time.Since(copyStart)
	if err != nil {
		giveBack()
		return fmt.Errorf("cachelayer: destage: %w", err)
	}
	e.noteDestageRate(bytes, time.Since(copyStart))

	// 3. Repoint the cut (always) and the live state (where the page is
	// still the one copied), and find the new replay start.
	destaged := make(map[Ino]struct{})
	e.mu.Lock()
	for _, k := range gone {
		cut.punchExtents(k.ino, k.blk*BlockSize, (k.blk+1)*BlockSize)
		destaged[k.ino] = struct{}{}
	}
	for i := range runs {
		r := &runs[i]
		destaged[r.ino] = struct{}{}
		cut.setExtent(Extent{Ino: r.ino, Off: r.blk * BlockSize, Len: uint32(len(r.pages)) * BlockSize, Addr: r.addr})
		e.repointLiveLocked(r, cutLSN)
	}
	for ino := range destaged {
		changed.inos[ino] = struct{}{}
	}
	if len(runs) > 0 {
		e.signalRoomLocked()
	}
	e.mu.Unlock()
	e.stats.DestageBytes.Add(bytes)

	if !persist {
		giveBack()
		return nil
	}

	// 4. Persist: the log first (the copied bytes may hold the effects of
	// ops up to copyLSN), then the metadata image.
	if changed.empty() && len(runs) == 0 && len(gone) == 0 {
		// Nothing happened since the last image: it holds every op
		// before replay.
		e.noteBackendLSN(replay - 1)
		return nil
	}
	persistStart := time.Now()
	if syncTo := max(cutLSN, copyLSN); syncTo > 0 {
		if err := e.wal.Sync(ctx, syncTo); err != nil {
			giveBack()
			return fmt.Errorf("cachelayer: destage: sync log: %w", err)
		}
	}
	if err := e.persistMeta(&cut, metaHeader{cut: cutLSN, replay: replay, nextIno: cut.nextIno}, changed); err != nil {
		giveBack()
		return fmt.Errorf("cachelayer: destage: %w", err)
	}

	// 5. Only now may the log forget what the backend holds.
	if replay > 1 {
		if err := e.wal.Trim(replay - 1); err != nil {
			return fmt.Errorf("cachelayer: destage: trim log to %d: %w", replay-1, err)
		}
		e.mu.Lock()
		e.noteTrimLocked(replay - 1)
		e.mu.Unlock()
	}
	e.noteBackendLSN(replay - 1)
	e.stats.DestageRounds.Add(1)
	e.log.WithFields(logrus.Fields{
		"scope": scope, "bytes": bytes, "records": len(runs), "cut_lsn": cutLSN,
		"replay_from": replay, "objects": len(changed.inos), "took": time.Since(start).Round(time.Microsecond),
		"copy": copied.Round(time.Microsecond), "backend_sync": (synced - copied).Round(time.Microsecond),
		"persist": time.Since(persistStart).Round(time.Microsecond),
	}).Debug("destage round")
	return nil
}

// copyOut copies the picked blocks (sorted by object and block) into
// records of up to MaxRecord bytes and appends them to the backend. Blocks
// no longer cached were dropped after the cut (truncate, punch, delete):
// they are returned as gone. copyLSN is the last LSN applied while copying.
//
// Pages are copied out of the cache in batches under the lock and appended
// outside it. With Config.WritebackJobs > 1 this is a pipeline: a second
// goroutine copies the next batches (up to WritebackJobs staged at once)
// while this one appends, so the memory copy under the engine lock overlaps
// the backend's writes.
func (e *Engine) copyOut(picks []blockKey) (runs []copied, gone []blockKey, copyLSN uint64, bytes int64, err error) {
	jobs := max(1, e.cfg.WritebackJobs)
	for len(e.stageBufs) < jobs {
		// A batch ends at the first page past destageBatch bytes.
		e.stageBufs = append(e.stageBufs, make([]byte, 0, destageBatch+BlockSize))
	}
	// A record is a run of one object's consecutive blocks within one
	// batch: its bytes lie back to back in the batch's buffer and go to
	// the backend from there.
	appendBatch := func(b *stagedBatch) error {
		for i := 0; i < len(b.pages); {
			first := b.pages[i]
			j := i + 1
			for j < len(b.pages) && b.pages[j].k.ino == first.k.ino && b.pages[j].k.blk == first.k.blk+uint64(j-i) && (j-i)*BlockSize < MaxRecord {
				j++
			}
			rec := b.data[first.at : b.pages[j-1].at+BlockSize]
			addr, err := e.be.Append(rec)
			if err != nil {
				return err
			}
			c := copied{ino: first.k.ino, blk: first.k.blk, addr: addr, pages: make([]pageCopy, 0, j-i)}
			for _, p := range b.pages[i:j] {
				c.pages = append(c.pages, p.pc)
			}
			runs = append(runs, c)
			bytes += int64(len(rec))
			e.roundDone.Add(int64(len(rec)))
			i = j
		}
		return nil
	}

	if jobs == 1 {
		for i := 0; i < len(picks); {
			var b stagedBatch
			i = e.stageBatch(picks, i, &e.stageBufs[0], &b)
			gone = append(gone, b.gone...)
			copyLSN = b.copyLSN
			if err := appendBatch(&b); err != nil {
				return nil, nil, 0, 0, err
			}
		}
		return runs, gone, copyLSN, bytes, nil
	}
	free := make(chan int, jobs) // indexes of idle staging buffers
	for j := range jobs {
		free <- j
	}
	staged := make(chan stagedBatch, jobs)
	stop := make(chan struct{})
	go func() {
		defer close(staged)
		for i := 0; i < len(picks); {
			var j int
			select {
			case j = <-free:
			case <-stop:
				return
			}
			b := stagedBatch{buf: j}
			i = e.stageBatch(picks, i, &e.stageBufs[j], &b)
			staged <- b
		}
	}()
	var aerr error
	for b := range staged {
		if aerr == nil {
			gone = append(gone, b.gone...)
			copyLSN = b.copyLSN
			if aerr = appendBatch(&b); aerr != nil {
				close(stop)
			}
		}
		free <- b.buf
	}
	if aerr != nil {
		return nil, nil, 0, 0, aerr
	}
	return runs, gone, copyLSN, bytes, nil
}

// stagedPage is one page copied out of the cache for destage.
type stagedPage struct {
	k  blockKey
	pc pageCopy
	at int // offset of its bytes in the batch's data
}

// stagedBatch is the pages one lock hold copied.
type stagedBatch struct {
	data    []byte // the copied bytes, page after page
	pages   []stagedPage
	gone    []blockKey
	copyLSN uint64
	buf     int // which staging buffer holds the bytes
}

// destageBatch is how many bytes a batch copies per hold of the lock.
const destageBatch = 4 << 20

// stageBatch copies picks[i:] into *sb under the lock, up to destageBatch
// bytes, and returns the index of the first pick not taken.
func (e *Engine) stageBatch(picks []blockKey, i int, sb *[]byte, b *stagedBatch) int {
	stageBuf := (*sb)[:0]
	e.mu.Lock()
	for ; i < len(picks) && len(stageBuf) < destageBatch; i++ {
		k := picks[i]
		r, ok := e.pages.Get(pageRef{Ino: k.ino, Blk: k.blk})
		if !ok {
			b.gone = append(b.gone, k)
			continue
		}
		m := &e.pool.meta[r.Page]
		at := len(stageBuf)
		stageBuf = append(stageBuf, e.pool.data(r.Page)...)
		b.pages = append(b.pages, stagedPage{k: k, pc: pageCopy{page: r.Page, seq: m.seq, ver: m.ver}, at: at})
	}
	b.copyLSN = e.lastLSN
	e.mu.Unlock()
	b.data = stageBuf
	*sb = stageBuf[:0] // keep the grown buffer for the next batch and round
	return i
}

// repointLiveLocked records a destaged run in the live state: each block
// whose page is still the allocation that was copied now has its extent in
// the run's record; the page is clean if it was not written since the copy,
// else it stays dirty with only ops after the cut missing from the backend.
func (e *Engine) repointLiveLocked(r *copied, cutLSN uint64) {
	// Sub-runs of blocks whose page is the one copied.
	n := len(r.pages)
	live := make([]bool, n)
	for j, pc := range r.pages {
		ref, ok := e.pages.Get(pageRef{Ino: r.ino, Blk: r.blk + uint64(j)})
		if !ok || ref.Page != pc.page || e.pool.meta[pc.page].seq != pc.seq {
			continue
		}
		live[j] = true
		if e.pool.meta[pc.page].ver == pc.ver {
			e.markCleanLocked(ref)
		} else {
			e.redirtyLocked(ref, cutLSN+1)
		}
	}
	for j := 0; j < n; {
		if !live[j] {
			j++
			continue
		}
		k := j
		for k < n && live[k] {
			k++
		}
		x := Extent{Ino: r.ino, Off: (r.blk + uint64(j)) * BlockSize, Len: uint32(k-j) * BlockSize, Skip: uint32(j) * BlockSize, Addr: r.addr}
		// The blocks were cached, so they count as holding data already.
		e.st.setExtent(x)
		j = k
	}
	e.changed.inos[r.ino] = struct{}{}
}

// persistMeta writes the cut as a delta, or as a full checkpoint when
// there is none yet, the deltas have outgrown the last one, or the
// backend's meta space is getting short. A delta that does not fit the
// backend's fixed meta space (backend.ErrMetaFull) is written again as a
// checkpoint, which needs no room beyond what metaRoomShort keeps.
func (e *Engine) persistMeta(cut *meta, h metaHeader, changed changeSet) error {
	full := e.cpSize == 0 || e.deltaSize > max(e.cpSize, minDeltaBeforeCheckpoint) || e.metaRoomShort()
	err := e.writeMeta(cut, h, changed, full)
	if !full && errors.Is(err, backend.ErrMetaFull) {
		e.log.WithError(err).Info("meta space short for a delta; writing a checkpoint")
		full = true
		err = e.writeMeta(cut, h, changed, full)
	}
	return err
}

// writeMeta writes one checkpoint or delta and accounts for it.
func (e *Engine) writeMeta(cut *meta, h metaHeader, changed changeSet, full bool) error {
	kind := backend.MetaDelta
	if full {
		kind = backend.MetaCheckpoint
	}
	seq := e.metaSeq + 1
	w, err := e.be.CreateMeta(kind, seq)
	if err != nil {
		return err
	}
	var n int64
	if full {
		n, err = writeCheckpoint(w, cut, h)
	} else {
		n, err = writeDelta(w, cut, h, changed)
	}
	if err == nil {
		err = w.Commit()
	} else {
		_ = w.Abort()
	}
	if err != nil {
		return fmt.Errorf("write %v %d: %w", kind, seq, err)
	}
	e.metaSeq = seq
	if full {
		e.cpSize, e.deltaSize = n, 0
		e.stats.Checkpoints.Add(1)
		if err := e.be.RemoveMetaBefore(seq); err != nil {
			e.log.WithError(err).Warn("remove superseded metadata")
		}
	} else {
		e.deltaSize += n
		e.stats.Deltas.Add(1)
	}
	return nil
}

// metaRoomShort reports whether the backend's fixed meta space (the meta
// ring of a device backend) is getting too short to hold, besides the live
// checkpoint and deltas, one more checkpoint: then the next record must be
// a full checkpoint, which lets the backend free the deltas. The margin
// covers the checkpoint's growth, the next delta and record padding.
func (e *Engine) metaRoomShort() bool {
	free, limited := e.be.MetaRoom()
	return limited && free < 2*(e.cpSize+e.deltaSize)+metaRoomMargin
}

// noteBackendLSN records that the backend holds the effects of every op up
// to lsn (a persisted image whose replay starts after it).
func (e *Engine) noteBackendLSN(lsn uint64) {
	for {
		old := e.backendLSN.Load()
		if lsn <= old || e.backendLSN.CompareAndSwap(old, lsn) {
			return
		}
	}
}

// roundPages bounds the pages of a watermark or stream round: a round frees
// room only when it ends, so writers waiting at a full budget see room come
// back a quarter of the budget (at least 4 MiB) at a time, not all at once
// after one long round. Rounds that must take everything (max age, Flush,
// write-through) are not bounded.
func (e *Engine) roundPages() int {
	return max(e.dirtyLimit()/4, (4<<20)/BlockSize)
}

// destageNeeded decides whether the flusher should run a round now. Once
// dirty data reaches the high watermark, rounds continue until it is down
// to the low one (e.draining).
func (e *Engine) destageNeeded() (destageScope, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	limit := e.dirtyLimit()
	dirty := e.pool.nDirty + e.reserved
	if k, ok := e.dirtyQ.Min(); ok {
		at := e.pool.meta[e.pageOfLocked(k.Ino, k.Blk)].dirtyAt
		if time.Since(time.Unix(0, at)) >= e.cfg.MaxDirtyAge {
			return destageAll, true
		}
	}
	if used, capacity := e.wal.Usage(); capacity > 0 && used*2 >= capacity {
		return destageAll, true
	}
	if dirty >= int(float64(limit)*e.cfg.HighWatermark) {
		e.draining = true
	}
	if e.draining && e.pool.nDirty > int(float64(limit)*e.cfg.LowWatermark) {
		return destageToLow, true
	}
	e.draining = false
	if e.streamDirty > 0 {
		return destageStream, true
	}
	if e.pool.nDirty > 0 && e.pool.available() == 0 {
		return destageToLow, true
	}
	if !e.changed.empty() && time.Since(e.lastPersist) >= e.cfg.MaxDirtyAge {
		return destageMetaOnly, true
	}
	return 0, false
}

// flusher runs destage rounds in the background.
func (e *Engine) flusher() {
	defer e.done.Done()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-e.stop:
			return
		case <-e.kick:
		case <-tick.C:
		}
		scope, ok := e.destageNeeded()
		if !ok {
			continue
		}
		err := e.destage(context.Background(), scope, true)
		if err != nil {
			e.destageFailed(err)
			select {
			case <-e.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxDestageBackoff)
			continue
		}
		e.destageOK()
		backoff = 100 * time.Millisecond
	}
}

// Flush destages everything dirty now and persists the metadata, so that
// the backend alone holds the filesystem.
func (e *Engine) Flush(ctx context.Context) error {
	for i := 0; ; i++ {
		if err := e.destage(ctx, destageAll, true); err != nil {
			return err
		}
		e.mu.Lock()
		dirty, pending := e.pool.nDirty, !e.changed.empty()
		e.mu.Unlock()
		if dirty == 0 && !pending {
			e.destageOK()
			return nil
		}
		if i >= 3 {
			// Writers keep dirtying pages: what was dirty when Flush was
			// called is in the backend.
			e.destageOK()
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
