package backend

import (
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"
)

// Addr locates one record (a run of one object's data) in the backend.
type Addr struct {
	Segment uint64 // 0 means "no address"
	Off     uint64 // byte offset of the record's data inside the segment file
	Len     uint32 // byte length of the record (<= MaxRecordLen)
	CRC     uint32 // CRC-32C (Castagnoli) of the record's bytes
}

// IsZero reports whether a is "no address".
func (a Addr) IsZero() bool { return a.Segment == 0 }

// End is the offset just past the record's padding: where the next record
// of the same segment starts when the two are adjacent.
func (a Addr) End() uint64 { return uint64(alignUp(int64(a.Off) + int64(a.Len))) }

func (a Addr) String() string {
	return fmt.Sprintf("%d:%d+%d/%08x", a.Segment, a.Off, a.Len, a.CRC)
}

// Append copies p into the open segment, starting a new segment when the
// record does not fit, and returns its address. The record is durable after
// the next successful Sync. Appends go through a write buffer that is
// written out with one large write when full.
//
// After an I/O error every address returned since the last successful Sync
// is void (see the package documentation); the store stays usable and the
// caller appends that data again. Safe for concurrent use.
func (s *Store) Append(p []byte) (Addr, error) {
	if len(p) == 0 || len(p) > MaxRecordLen {
		return Addr{}, fmt.Errorf("%w: %d bytes (must be 1..%d)", ErrRecordSize, len(p), MaxRecordLen)
	}
	sum := crc(p)
	alen := alignUp(int64(len(p)))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return Addr{}, ErrClosed
	}
	if s.active != nil && s.active.end+alen > segmentHdrLen+s.segSz {
		if err := s.sealLocked(); err != nil {
			return Addr{}, err
		}
	}
	if s.active == nil {
		if err := s.startSegmentLocked(); err != nil {
			return Addr{}, err
		}
	}
	if int64(len(s.buf))+alen > int64(cap(s.buf)) {
		if err := s.flushLocked(); err != nil {
			return Addr{}, err
		}
	}

	// Readers look at s.buf[:len] only, under vis; the bytes past len are
	// the writer's until len grows, so the copy needs no lock.
	w := s.active
	n := len(s.buf)
	dst := s.buf[n : n+int(alen)]
	copy(dst, p)
	clear(dst[len(p):])
	off := w.end

	s.vis.Lock()
	s.buf = s.buf[:n+int(alen)]
	w.end += alen
	s.vis.sizes[w.num] = w.end
	s.vis.Unlock()
	return Addr{Segment: w.num, Off: uint64(off), Len: uint32(len(p)), CRC: sum}, nil
}

// Sync makes every Append so far durable: it writes out the write buffer,
// fdatasyncs every segment written since the last Sync and fsyncs segments/
// when a segment file was created. On failure every address returned since
// the last successful Sync is voided.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	return s.syncLocked()
}

func (s *Store) syncLocked() error {
	if err := s.flushLocked(); err != nil {
		return err
	}
	// The segments are synced at once: a filesystem commits the
	// metadata of concurrent syncs (the files' new sizes) together, and
	// the device flushes its cache once for them, where one sync after
	// another would pay a journal commit and a flush each.
	todo := s.sealed
	if w := s.active; w != nil && w.synced < w.end {
		todo = append(todo[:len(todo):len(todo)], w)
	}
	// At most maxParallelSyncs at a time: each waiting sync holds a thread.
	errs := make([]error, len(todo))
	sem := make(chan struct{}, maxParallelSyncs)
	var wg sync.WaitGroup
	for i, w := range todo {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := w.f.SyncData(); err != nil {
				errs[i] = fmt.Errorf("backend: sync segment %d: %w", w.num, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return s.failLocked(err)
	}
	if s.newFile {
		if err := s.space.syncNames(); err != nil {
			return s.failLocked(fmt.Errorf("backend: sync segments directory: %w", err))
		}
		s.newFile = false
	}
	for _, w := range s.sealed {
		w.synced = w.end
		if err := w.f.Close(); err != nil {
			// The data is durable; a failing close of a synced file loses nothing.
			s.log.WithError(err).WithField("segment", w.num).Warn("close of synced segment failed")
		}
	}
	s.sealed = nil
	if s.active != nil {
		s.active.synced = s.active.end
	}
	return nil
}

// maxParallelSyncs bounds the segment syncs Sync runs at once.
const maxParallelSyncs = 16

// flushLocked writes the write buffer to the active segment.
func (s *Store) flushLocked() error {
	w := s.active
	if w == nil || len(s.buf) == 0 {
		return nil
	}
	// vis.bufOff is only written with mu held, so mu suffices to read it.
	if _, err := w.f.WriteAt(s.buf, s.vis.bufOff); err != nil {
		return s.failLocked(fmt.Errorf("backend: write segment %d at %d: %w", w.num, s.vis.bufOff, err))
	}
	s.vis.Lock()
	s.vis.bufOff += int64(len(s.buf))
	s.buf = s.buf[:0]
	s.vis.Unlock()
	return nil
}

// sealLocked ends the active segment: its buffer is written out and it waits
// in s.sealed for the next Sync.
func (s *Store) sealLocked() error {
	if err := s.flushLocked(); err != nil {
		return err
	}
	s.sealed = append(s.sealed, s.active)
	s.active = nil
	s.vis.Lock()
	s.vis.activeNo = 0
	s.vis.bufOff = 0
	s.vis.Unlock()
	return nil
}

// startSegmentLocked creates the next segment file and puts its header in
// the (empty) write buffer.
func (s *Store) startSegmentLocked() error {
	num := s.nextSeg
	// A number whose creation failed is not retried: the failure may have
	// left a file behind, and Create refuses to reuse a name.
	s.nextSeg++
	f, err := s.space.create(num)
	if err != nil {
		// Nothing was written, but one rule for every failed Append keeps
		// the caller simple: what it appended since the last Sync is void.
		return s.failLocked(fmt.Errorf("backend: create segment %d: %w", num, err))
	}
	s.newFile = true
	s.active = &segWriter{num: num, f: f, end: segmentHdrLen}
	hdr := s.buf[:segmentHdrLen] // the buffer is empty: sealLocked or failLocked wrote or dropped it
	putSegmentHeader(hdr, s.uuid, num)
	s.vis.Lock()
	s.buf = hdr
	s.vis.activeNo = num
	s.vis.bufOff = 0
	s.vis.sizes[num] = segmentHdrLen
	s.vis.Unlock()
	s.log.WithField("segment", num).Debug("segment started")
	return nil
}

// failLocked handles a failed write or sync. Every segment written since
// the last Sync is sealed for good: its durable prefix stays readable, the
// rest is void, and a segment holding nothing durable is removed. err is
// returned unchanged so callers can `return s.failLocked(err)`.
func (s *Store) failLocked(err error) error {
	ws := s.sealed
	if s.active != nil {
		ws = append(ws, s.active)
	}
	s.vis.Lock()
	for _, w := range ws {
		s.vis.voided[w.num] = w.synced
		if w.synced <= segmentHdrLen {
			delete(s.vis.sizes, w.num)
		}
	}
	s.vis.activeNo = 0
	s.vis.bufOff = 0
	s.buf = s.buf[:0]
	s.vis.Unlock()

	nums := make([]uint64, 0, len(ws))
	for _, w := range ws {
		nums = append(nums, w.num)
		w.f.Close() // the write already failed; a close error adds nothing
		if w.synced > segmentHdrLen {
			continue
		}
		s.handles.forget(w.num)
		if rerr := s.space.remove(w.num); rerr != nil {
			s.log.WithError(rerr).WithField("segment", w.num).Warn("cannot remove failed empty segment")
		}
	}
	s.active = nil
	s.sealed = nil
	s.newFile = false
	s.log.WithError(err).WithFields(logrus.Fields{"segments": nums}).
		Warn("backend write failed; addresses since the last sync are void")
	return err
}
