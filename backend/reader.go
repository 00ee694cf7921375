package backend

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"sync"
)

// checkAddr rejects addresses Append cannot have produced.
func checkAddr(a Addr) error {
	switch {
	case a.Segment == 0:
		return fmt.Errorf("%w: %v: no segment", ErrBadAddr, a)
	case a.Len == 0 || a.Len > MaxRecordLen:
		return fmt.Errorf("%w: %v: length out of range", ErrBadAddr, a)
	case a.Off < segmentHdrLen || a.Off%BlockSize != 0 || a.Off > 1<<62:
		return fmt.Errorf("%w: %v: offset not a record offset", ErrBadAddr, a)
	}
	return nil
}

// Read reads the record at a into buf[:a.Len] (buf may be longer) and
// verifies its CRC; a mismatch is a *CorruptionError naming the segment, the
// offset and both CRCs. Records still in the write buffer are served from
// it. Safe for concurrent use with Append, Sync and other Reads.
func (s *Store) Read(a Addr, buf []byte) error {
	if err := checkAddr(a); err != nil {
		return err
	}
	if len(buf) < int(a.Len) {
		return fmt.Errorf("%w: %v: buffer of %d bytes too short", ErrBadAddr, a, len(buf))
	}
	if err := s.readSpan(a.Segment, int64(a.Off), buf[:a.Len]); err != nil {
		return err
	}
	return s.verify(a, buf[:a.Len])
}

// ReadRange reads records that are physically adjacent in one segment
// (addrs[i].Off == addrs[i-1].End()) with one read, and verifies each CRC.
// buf receives the whole span, padding included: record i lands at
// buf[addrs[i].Off-addrs[0].Off:][:addrs[i].Len], and buf must hold at least
// addrs[n-1].Off+addrs[n-1].Len-addrs[0].Off bytes.
func (s *Store) ReadRange(addrs []Addr, buf []byte) error {
	if len(addrs) == 0 {
		return nil
	}
	for i, a := range addrs {
		if err := checkAddr(a); err != nil {
			return err
		}
		if i > 0 {
			prev := addrs[i-1]
			if a.Segment != prev.Segment || a.Off != prev.End() {
				return fmt.Errorf("%w: %v does not follow %v", ErrBadAddr, a, prev)
			}
		}
	}
	first, last := addrs[0], addrs[len(addrs)-1]
	span := last.Off + uint64(last.Len) - first.Off
	if uint64(len(buf)) < span {
		return fmt.Errorf("%w: range of %d bytes, buffer of %d", ErrBadAddr, span, len(buf))
	}
	if err := s.readSpan(first.Segment, int64(first.Off), buf[:span]); err != nil {
		return err
	}
	for _, a := range addrs {
		rel := a.Off - first.Off
		if err := s.verify(a, buf[rel:rel+uint64(a.Len)]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) verify(a Addr, p []byte) error {
	if got := crc(p); got != a.CRC {
		return &CorruptionError{
			Path: s.segmentPath(a.Segment), Segment: a.Segment, Offset: int64(a.Off),
			Reason: fmt.Sprintf("record of %d bytes: crc 0x%08x, expected 0x%08x", a.Len, got, a.CRC),
		}
	}
	return nil
}

// readSpan fills dst with segment seg's bytes at off: the part still in
// the write buffer is copied under vis, the rest is read from the file
// without any store lock (bytes below vis.bufOff are never written again).
func (s *Store) readSpan(seg uint64, off int64, dst []byte) error {
	end := off + int64(len(dst))
	fileEnd := end

	s.vis.RLock()
	if s.closed.Load() {
		s.vis.RUnlock()
		return ErrClosed
	}
	if v, ok := s.vis.voided[seg]; ok && end > v {
		s.vis.RUnlock()
		return fmt.Errorf("%w: segment %d bytes %d..%d", ErrVoided, seg, off, end)
	}
	size, ok := s.vis.sizes[seg]
	if !ok {
		s.vis.RUnlock()
		return &CorruptionError{Path: s.segmentPath(seg), Segment: seg, Offset: off,
			Reason: "segment does not exist", Err: iofs.ErrNotExist}
	}
	if end > size {
		s.vis.RUnlock()
		e := corruptf(s.segmentPath(seg), off, "data up to %d is beyond the segment's end at %d", end, size)
		e.Segment = seg
		return e
	}
	if seg == s.vis.activeNo && end > s.vis.bufOff {
		from := max(off, s.vis.bufOff)
		copy(dst[from-off:], s.buf[from-s.vis.bufOff:end-s.vis.bufOff])
		fileEnd = from
	}
	s.vis.RUnlock()

	if fileEnd == off {
		return nil
	}
	h, err := s.handles.acquire(seg)
	if err != nil {
		return err
	}
	defer s.handles.release(h)
	n, err := h.f.ReadAt(dst[:fileEnd-off], off)
	if err == io.EOF && int64(n) == fileEnd-off {
		err = nil
	}
	if err == io.EOF {
		e := corruptf(s.segmentPath(seg), off+int64(n), "segment ends before %d", fileEnd)
		e.Segment, e.Err = seg, io.ErrUnexpectedEOF
		return e
	}
	if err != nil {
		return fmt.Errorf("backend: read segment %d at %d: %w", seg, off, err)
	}
	return nil
}

// handleCache keeps read-only descriptors of segments, each opened once and
// checked against its header, at most max of them when idle. A segment is
// opened without holding mu, so a slow open does not stall reads of other
// segments; readers of the same segment wait for the one open.
type handleCache struct {
	s      *Store
	max    int
	mu     sync.Mutex
	m      map[uint64]*segHandle
	tick   uint64
	closed bool
}

type segHandle struct {
	num   uint64
	ready chan struct{} // closed when f or err is set
	f     File
	err   error

	// guarded by handleCache.mu
	refs    int
	lastUse uint64
	dropped bool // out of the map; close when refs reaches 0
}

func (c *handleCache) init(s *Store, max int) {
	c.s = s
	c.max = max
	c.m = make(map[uint64]*segHandle)
}

func (c *handleCache) acquire(num uint64) (*segHandle, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.tick++
	if h, ok := c.m[num]; ok {
		h.refs++
		h.lastUse = c.tick
		c.mu.Unlock()
		<-h.ready
		if h.err != nil {
			c.release(h)
			return nil, h.err
		}
		return h, nil
	}
	h := &segHandle{num: num, ready: make(chan struct{}), refs: 1, lastUse: c.tick}
	c.m[num] = h
	c.mu.Unlock()

	f, err := c.open(num)

	c.mu.Lock()
	h.f, h.err = f, err
	close(h.ready)
	if err != nil && c.m[num] == h {
		delete(c.m, num) // the next reader tries again
	}
	c.mu.Unlock()
	if err != nil {
		c.release(h)
		return nil, err
	}
	return h, nil
}

func (c *handleCache) open(num uint64) (File, error) {
	path := c.s.segmentPath(num)
	f, err := c.s.space.open(num)
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) {
			return nil, &CorruptionError{Path: path, Segment: num, Offset: -1, Reason: "segment file missing", Err: err}
		}
		return nil, fmt.Errorf("backend: open segment %d: %w", num, err)
	}
	hdr := make([]byte, segmentHdrLen)
	n, err := f.ReadAt(hdr, 0)
	if err != nil && err != io.EOF {
		f.Close()
		return nil, fmt.Errorf("backend: read header of segment %d: %w", num, err)
	}
	if err := checkSegmentHeader(path, hdr[:n], c.s.uuid, num); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (c *handleCache) release(h *segHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h.refs--
	if h.refs > 0 {
		return
	}
	if h.dropped || h.err != nil {
		if h.f != nil {
			h.f.Close()
		}
		return
	}
	c.evictLocked()
}

// evictLocked closes the least recently used idle handles beyond c.max.
// An idle handle (refs 0) is always ready: its opener held a reference.
func (c *handleCache) evictLocked() {
	for len(c.m) > c.max {
		var victim *segHandle
		for _, h := range c.m {
			if h.refs == 0 && (victim == nil || h.lastUse < victim.lastUse) {
				victim = h
			}
		}
		if victim == nil {
			return // all busy; the limit is enforced again as they are released
		}
		delete(c.m, victim.num)
		victim.f.Close()
	}
}

// forget drops segment num's handle, e.g. because the file is removed.
func (c *handleCache) forget(num uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.m[num]; ok {
		c.dropLocked(h)
	}
}

func (c *handleCache) dropLocked(h *segHandle) {
	delete(c.m, h.num)
	if h.refs == 0 {
		h.f.Close()
	} else {
		h.dropped = true
	}
}

// closeAll closes every handle (busy ones when released) and refuses new ones.
func (c *handleCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, h := range c.m {
		c.dropLocked(h)
	}
}

// cached returns the number of cached handles.
func (c *handleCache) cached() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
