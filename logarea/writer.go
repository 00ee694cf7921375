package logarea

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/golang/snappy"
)

// maxCompressSkip is the most payloads stored without a compression attempt
// after attempts that did not pay off.
const maxCompressSkip = 64

// compressSampler decides which payloads Reserve tries to compress. Most
// file data is already compressed or random, and snappy spends about a
// microsecond per KiB finding that out, on every write. After a payload
// that did not compress, the next one is stored as it is, after the next
// failure the next two, then four, up to maxCompressSkip; a payload that
// compresses resets the skip. Incompressible data then costs one attempt
// in maxCompressSkip; compressible data is compressed as before, and data
// that turns compressible is noticed within maxCompressSkip records.
// Reserve runs concurrently: the counters are atomics, and a race only
// shifts an attempt by a record.
type compressSampler struct {
	skip    atomic.Int32 // payloads still to store without an attempt
	backoff atomic.Int32 // the skip after the last failure (0 after a success)
	skipped atomic.Int64 // payloads stored without an attempt (Stats)
}

// try reports whether this payload should be compressed.
func (c *compressSampler) try() bool {
	if c.skip.Load() <= 0 {
		return true
	}
	c.skip.Add(-1)
	c.skipped.Add(1)
	return false
}

func (c *compressSampler) saved() {
	if c.backoff.Load() != 0 {
		c.backoff.Store(0)
	}
}

func (c *compressSampler) failed() {
	b := min(max(2*c.backoff.Load(), 1), maxCompressSkip)
	c.backoff.Store(b)
	c.skip.Store(b)
}

// Entry is a record with reserved room, returned by Reserve and consumed by
// exactly one Commit or Cancel. Its payload must not change in between.
type Entry struct {
	l       *Log
	rec     Record
	payload []byte // as stored: rec.Payload or its compressed form
	pooled  *[]byte
	rflags  uint8
	pcrc    uint32
	size    int64 // footprint of the record as prepared (0 until CommitRecord for ReserveSize)
	room    int64 // bytes reserved: size, or the largest record ReserveSize allows
	bySize  bool  // reserved with ReserveSize: the record comes with CommitRecord
	done    bool
}

// Size is the room the entry holds in the log, header and padding
// included.
func (e *Entry) Size() int64 { return e.room }

// Reserve prepares rec (compresses the payload when that saves space,
// checksums it) and waits until there is room for it both in the memory
// buffer and in the record area. A full log makes Reserve wait for Trim;
// it fails only when ctx ends, the log fails or closes, or rec is invalid.
// It must not be called with the engine's lock held; it may run
// concurrently. Requests are served in arrival order.
func (l *Log) Reserve(ctx context.Context, rec Record) (*Entry, error) {
	if rec.Type == 0 {
		return nil, fmt.Errorf("%w: type 0", ErrBadRecord)
	}
	if len(rec.Payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %d-byte payload, at most %d", ErrTooLarge, len(rec.Payload), MaxPayload)
	}
	e := &Entry{l: l, rec: rec, payload: rec.Payload}
	if l.cfg.Compression && len(rec.Payload) >= 64 && l.compress.try() {
		bp, _ := l.compressPool.Get().(*[]byte)
		if bp == nil {
			bp = new([]byte)
		}
		if n := snappy.MaxEncodedLen(len(rec.Payload)); cap(*bp) < n {
			*bp = make([]byte, n)
		}
		c := snappy.Encode((*bp)[:cap(*bp)], rec.Payload)
		if len(c) < len(rec.Payload)-len(rec.Payload)/16 { // worth at least 1/16
			e.payload, e.rflags, e.pooled = c, rflagSnappy, bp
			l.compress.saved()
		} else {
			l.compressPool.Put(bp)
			l.compress.failed()
		}
	}
	e.pcrc = crc32c(e.payload)
	e.size = int64(recordSize(len(e.payload)))
	e.room = e.size
	return l.reserve(ctx, e)
}

// ReserveSize waits, like Reserve, for room for one record of at most
// maxPayload payload bytes, whose content the engine builds later under its
// lock and gives to CommitRecord. Such records are stored uncompressed:
// compressing under the engine's lock would lengthen it.
func (l *Log) ReserveSize(ctx context.Context, maxPayload int) (*Entry, error) {
	if maxPayload < 0 || maxPayload > MaxPayload {
		return nil, fmt.Errorf("%w: room for a %d-byte payload, at most %d", ErrTooLarge, maxPayload, MaxPayload)
	}
	e := &Entry{l: l, room: int64(recordSize(maxPayload)), bySize: true}
	return l.reserve(ctx, e)
}

// reserve waits for e.room bytes of room.
func (l *Log) reserve(ctx context.Context, e *Entry) (*Entry, error) {
	l.mu.Lock()
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		e.release()
		return nil, err
	}
	if len(l.waiters) == 0 && l.fitsLocked(e.room) {
		l.reserveLocked(e.room)
		l.mu.Unlock()
		return e, nil
	}
	w := &waiter{size: e.room, ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()

	select {
	case <-w.ready:
		if w.err != nil {
			e.release()
			return nil, w.err
		}
		return e, nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			l.unreserveLocked(e.room)
		} else if w.err == nil {
			for i, x := range l.waiters {
				if x == w {
					l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
					break
				}
			}
		}
		l.grantLocked() // a large request leaving may let smaller ones in
		l.mu.Unlock()
		e.release()
		return nil, ctx.Err()
	}
}

// fitsLocked reports whether size more bytes fit both the memory buffer
// being filled and the record area up to the durable tail.
func (l *Log) fitsLocked(size int64) bool {
	return int64(len(l.cur))+l.memReserved+size <= l.bufSize &&
		int64(l.head-l.tailPos)+l.devReserved+size <= int64(l.areaSize)
}

func (l *Log) reserveLocked(size int64) {
	l.memReserved += size
	l.devReserved += size
}

func (l *Log) unreserveLocked(size int64) {
	l.memReserved -= size
	l.devReserved -= size
}

// grantLocked hands room to waiting Reserve calls, first come first served.
func (l *Log) grantLocked() {
	for len(l.waiters) > 0 && l.fitsLocked(l.waiters[0].size) {
		w := l.waiters[0]
		l.waiters[0] = nil
		l.waiters = l.waiters[1:]
		l.reserveLocked(w.size)
		w.granted = true
		close(w.ready)
	}
}

func (e *Entry) release() {
	if e.pooled != nil {
		e.l.compressPool.Put(e.pooled)
		e.pooled = nil
	}
	e.payload = nil
	e.rec.Payload = nil
}

// Commit assigns the next LSN to an entry from Reserve and queues it for
// the writer. It does no I/O and never waits for room (Reserve took it), so
// the engine calls it under its own lock, in the order it applies the ops.
// It fails only when the log has failed or is closed (the room is given
// back then), or when e came from ReserveSize (use CommitRecord).
func (l *Log) Commit(e *Entry) (LSN, error) {
	if e != nil && e.l == l && !e.done && e.bySize {
		return 0, fmt.Errorf("%w: an entry from ReserveSize is committed with CommitRecord", ErrBadRecord)
	}
	return l.commit(e)
}

// CommitRecord is Commit for an entry from ReserveSize (or Reserve): rec
// replaces whatever the entry was prepared with, stored uncompressed, and
// must fit the room reserved. When it does not, or rec is invalid, the
// entry stays reserved and can still be committed or cancelled.
func (l *Log) CommitRecord(e *Entry, rec Record) (LSN, error) {
	if e == nil || e.l != l || e.done {
		return 0, ErrEntryUsed
	}
	if rec.Type == 0 {
		return 0, fmt.Errorf("%w: type 0", ErrBadRecord)
	}
	size := int64(recordSize(len(rec.Payload)))
	if len(rec.Payload) > MaxPayload || size > e.room {
		return 0, fmt.Errorf("%w: %d-byte payload in the room of a %d-byte record", ErrTooLarge, len(rec.Payload), e.room)
	}
	if e.pooled != nil {
		l.compressPool.Put(e.pooled)
		e.pooled = nil
	}
	e.rec, e.payload, e.rflags = rec, rec.Payload, 0
	e.pcrc = crc32c(rec.Payload)
	e.size = size
	return l.commit(e)
}

func (l *Log) commit(e *Entry) (LSN, error) {
	if e == nil || e.l != l || e.done {
		return 0, ErrEntryUsed
	}
	e.done = true
	l.mu.Lock()
	l.unreserveLocked(e.room)
	if err := l.usableLocked(); err != nil {
		l.grantLocked()
		l.mu.Unlock()
		e.release()
		return 0, err
	}
	lsn := l.nextLSN
	l.nextLSN++
	pos := l.head
	l.head += uint64(e.size)
	l.index.push(pos)
	l.appended = true

	n := len(l.cur)
	l.cur = l.cur[:n+int(e.size)]
	b := l.cur[n:]
	h := recHeader{
		lsn: lsn, synced: l.durableLSN, obj: e.rec.Obj, off: e.rec.Off, length: e.rec.Len,
		stored: uint32(len(e.payload)), pcrc: e.pcrc, epoch: l.epoch,
		typ: e.rec.Type, flags: e.rec.Flags, rflags: e.rflags,
	}
	encodeHeader(b, &h, l.seed)
	copy(b[headerSize:], e.payload)
	clear(b[headerSize+len(e.payload):])
	l.st.records++
	l.st.bytesIn += int64(len(e.rec.Payload))
	l.st.bytesOut += e.size
	if e.rflags&rflagSnappy != 0 {
		l.st.compessed++
	}
	if e.room > e.size {
		l.grantLocked() // a ReserveSize entry used less than its room
	}
	l.mu.Unlock()
	e.release()
	l.wakeWriter()
	return lsn, nil
}

// Cancel gives back the room of an entry that will not be committed.
func (l *Log) Cancel(e *Entry) {
	if e == nil || e.l != l || e.done {
		return
	}
	e.done = true
	l.mu.Lock()
	l.unreserveLocked(e.room)
	l.grantLocked()
	l.mu.Unlock()
	e.release()
}

// Sync waits until every record up to lsn is durable on the write quorum.
// Concurrent Syncs and Commits share device writes and syncs: one round
// writes everything committed so far with one write per replica, and one
// device sync per replica covers everything written before it started; up
// to two syncs overlap. When nothing runs, Sync does the round and the sync
// in its own goroutine. ctx ends the wait, not I/O already started.
func (l *Log) Sync(ctx context.Context, lsn LSN) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lsn >= l.nextLSN && lsn > l.durableLSN {
		return fmt.Errorf("%w: sync of lsn %d, last committed is %d", ErrBadLSN, lsn, l.nextLSN-1)
	}
	for lsn > l.durableLSN {
		if l.failErr != nil {
			return l.failErr
		}
		if l.closed {
			return ErrClosed
		}
		if lsn > l.syncWanted {
			l.syncWanted = lsn
		}
		if !l.writing && l.syncsInFlight == 0 && !l.closing && !l.metaDirty {
			// Nothing runs: do the round and the sync here rather than
			// hand them to the writer and wait to be woken (two fewer
			// goroutine switches per fsync at low concurrency). Syncs
			// arriving meanwhile are served by the writer, overlapping.
			// Each pass does I/O or waits below, so it cannot spin.
			did := true
			switch {
			case lsn > l.writtenLSN:
				l.writeBatchLocked() // lsn is in cur: nobody else writes
			case lsn > l.syncIssued:
				l.startSyncLocked(true)
			default:
				did = false
			}
			if did {
				l.wakeWriter() // records committed meanwhile
				continue
			}
		}
		l.wakeWriter()
		ch := l.durableCh
		l.mu.Unlock()
		select {
		case <-ch:
			l.mu.Lock()
		case <-ctx.Done():
			l.mu.Lock()
			return ctx.Err()
		}
	}
	return nil
}

// maxSyncsInFlight is how many device syncs may overlap. Two let a sync
// start for records written while another sync runs, instead of waiting for
// it: that is what two fdatasync callers on separate files get natively.
const maxSyncsInFlight = 2

// batch is one write round: the records committed since the previous round,
// written to every healthy replica with one write each (two where the area
// wraps).
type batch struct {
	buf   []byte
	pos   uint64
	first LSN
	last  LSN
}

// writer moves committed records to the devices. It writes whatever is
// committed as soon as it can, so that the loss window without Sync stays
// one round wide, and starts a device sync of everything written when a
// Sync waits for a record no running sync covers. Syncs that arrive while
// a round or a sync runs are served together by the next one (group
// commit); up to maxSyncsInFlight syncs overlap. A Sync that finds the log
// idle does the round and the sync itself (see Sync).
func (l *Log) writer() {
	defer close(l.writerDone)
	for {
		l.mu.Lock()
		for {
			if l.failErr != nil && l.syncsInFlight == 0 && !l.writing {
				l.closed = true
				l.notifyLocked()
				l.mu.Unlock()
				return
			}
			if l.failErr == nil && !l.writing && (l.writeNowLocked() || l.metaDirty || l.needSyncLocked()) {
				break
			}
			if l.closing && l.syncsInFlight == 0 && !l.writing && l.durableLSN == l.nextLSN-1 && len(l.cur) == 0 {
				l.closed = true
				l.notifyLocked()
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
			<-l.wake
			l.mu.Lock()
		}
		switch {
		case l.metaDirty:
			l.metaDirty = false
			l.mu.Unlock()
			l.recordFailures()
			continue
		case l.writeNowLocked():
			l.writeBatchLocked()
			if l.needSyncLocked() {
				l.startSyncLocked(false)
			}
		default:
			// Everything a Sync waits for is written: start a device sync.
			l.startSyncLocked(false)
		}
		l.mu.Unlock()
	}
}

// writeBatchLocked writes everything committed to every healthy replica:
// one round. The caller holds mu, and no other round runs (l.writing);
// mu is released during the I/O.
func (l *Log) writeBatchLocked() {
	b := batch{buf: l.cur, pos: l.curPos, first: l.curFirst, last: l.nextLSN - 1}
	if l.spare == nil {
		l.spare = make([]byte, 0, l.bufSize) // the second buffer, on first use
	}
	l.cur, l.spare = l.spare, nil
	l.curPos, l.curFirst = l.head, l.nextLSN
	l.grantLocked() // the new buffer is empty
	reps := l.appendHealthyLocked(l.roundReps[:0])
	l.writing = true
	l.mu.Unlock()

	errs := l.writeRound(reps, &b, l.roundErrs[:0])

	l.mu.Lock()
	l.writing = false
	l.roundReps, l.roundErrs = reps, errs
	for i, err := range errs {
		if err != nil {
			l.failReplicaLocked(reps[i], err)
		}
	}
	l.spare = b.buf[:0]
	if l.failErr == nil {
		l.writtenLSN = b.last
		l.st.batches++
		l.st.maxBatch = max(l.st.maxBatch, int64(b.last-b.first+1))
		for i, r := range reps {
			if errs[i] == nil {
				r.written = b.last
			}
		}
		l.notifyLocked() // for waiters on written records (Stats, tests)
	}
}

// writeNowLocked reports whether the writer should write what is
// committed now. It does unless every sync slot is busy and a Sync waits:
// then the records gather until a slot frees and go in one write with the
// sync that follows, instead of one write each.
func (l *Log) writeNowLocked() bool {
	if len(l.cur) == 0 {
		return false
	}
	return l.syncsInFlight < maxSyncsInFlight || (l.syncWanted <= l.syncIssued && !l.closing)
}

// needSyncLocked reports whether a device sync should start now: a Sync
// (or Close) waits for a written record that no running sync covers, and
// fewer than maxSyncsInFlight run. A record not yet written is written
// first; its round starts the sync.
func (l *Log) needSyncLocked() bool {
	want := l.syncWanted
	if l.closing {
		want = l.nextLSN - 1
	}
	return want > l.syncIssued && want > l.durableLSN && l.writtenLSN > l.syncIssued &&
		l.syncsInFlight < maxSyncsInFlight && (len(l.cur) == 0 || want <= l.writtenLSN)
}

// startSyncLocked syncs every healthy replica up to writtenLSN, in the
// background or, with inline, in the calling goroutine (mu is released
// during the I/O). When it completes, durableLSN covers that target: a
// sync started after the writes completed makes them durable, whatever
// other syncs still run.
func (l *Log) startSyncLocked(inline bool) {
	target := l.writtenLSN
	l.syncIssued = target
	l.syncsInFlight++
	reps := l.healthyLocked()
	run := func() {
		errs := make([]error, len(reps))
		if len(reps) == 1 {
			errs[0] = reps[0].sync()
		} else {
			var wg sync.WaitGroup
			for i, r := range reps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = r.sync()
				}()
			}
			wg.Wait()
		}
		l.mu.Lock()
		l.syncsInFlight--
		for i, err := range errs {
			if err != nil {
				l.failReplicaLocked(reps[i], err)
			}
		}
		if l.failErr == nil {
			l.st.syncs++
			if target > l.durableLSN {
				n := int64(target - l.durableLSN)
				l.st.syncedRecords += n
				l.st.maxGroup = max(l.st.maxGroup, n)
				l.durableLSN = target
			}
			for i, r := range reps {
				if errs[i] == nil && target > r.synced {
					r.synced = target
				}
			}
			l.notifyLocked()
		}
	}
	if inline {
		l.mu.Unlock()
		run()
		return
	}
	go func() {
		run()
		l.mu.Unlock()
		l.wakeWriter()
	}()
}

// writeRound writes b to every replica in parallel and returns each
// replica's error.
func (l *Log) writeRound(reps []*replica, b *batch, errs []error) []error {
	errs = errs[:0]
	for range reps {
		errs = append(errs, nil)
	}
	if len(reps) == 1 {
		errs[0] = reps[0].writeRecords(b.buf, b.pos)
		return errs
	}
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.writeRecords(b.buf, b.pos)
		}()
	}
	wg.Wait()
	return errs
}

// recordFailures writes the replicas' health into the survivors' metadata,
// so that the next Open knows which replicas stopped being written.
func (l *Log) recordFailures() {
	if err := l.writeMetaAll(true); err != nil {
		l.log.WithError(err).Error("recording a replica failure in the log metadata")
	}
}
