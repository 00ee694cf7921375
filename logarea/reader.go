package logarea

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/dcache/dcache/internal/device"
)

// area is the circular record area of one replica: logical position pos is
// stored at device offset off + pos%size.
type area struct {
	dev  device.Device
	off  int64
	size uint64
}

// readAt fills p from logical position pos, wrapping at the end of the area.
func (a area) readAt(p []byte, pos uint64) error {
	for len(p) > 0 {
		phys := pos % a.size
		n := min(uint64(len(p)), a.size-phys)
		if _, err := a.dev.ReadAt(p[:n], a.off+int64(phys)); err != nil {
			return fmt.Errorf("logarea: read %s: %w", a.dev.Name(), err)
		}
		p, pos = p[n:], pos+n
	}
	return nil
}

// writeAt writes p at logical position pos: one device write, two when it
// wraps.
func (a area) writeAt(p []byte, pos uint64) error {
	for len(p) > 0 {
		phys := pos % a.size
		n := min(uint64(len(p)), a.size-phys)
		if _, err := a.dev.WriteAt(p[:n], a.off+int64(phys)); err != nil {
			return fmt.Errorf("logarea: write %s: %w", a.dev.Name(), err)
		}
		p, pos = p[n:], pos+n
	}
	return nil
}

// physical is the device offset of logical position pos.
func (a area) physical(pos uint64) int64 { return a.off + int64(pos%a.size) }

// readChunk is the most an areaReader reads at once; it holds any record.
// It starts with firstChunk and doubles with each refill, so that opening
// a log with little in it reads little.
const (
	readChunk  = 4 << 20
	firstChunk = 128 << 10
)

// areaReader reads an area sequentially in large chunks, so scanning and
// replay cost one device read per few MiB, not one per record.
type areaReader struct {
	area
	buf   []byte
	start uint64 // logical position of buf[0]
	n     int    // valid bytes in buf
	chunk int    // size of the next refill
}

func newAreaReader(a area) *areaReader {
	return &areaReader{area: a}
}

// peek returns n bytes at logical position pos. The slice is valid until
// the next call.
func (r *areaReader) peek(pos uint64, n int) ([]byte, error) {
	if pos >= r.start && pos+uint64(n) <= r.start+uint64(r.n) {
		off := pos - r.start
		return r.buf[off : off+uint64(n)], nil
	}
	if r.chunk == 0 {
		r.chunk = firstChunk
	}
	size := uint64(max(n, r.chunk))
	size = min(size, r.size)
	r.chunk = min(2*r.chunk, readChunk)
	if uint64(n) > size {
		return nil, fmt.Errorf("logarea: read of %d bytes over a %d-byte area", n, r.size)
	}
	if uint64(cap(r.buf)) < size {
		r.buf = make([]byte, size)
	}
	r.buf = r.buf[:size]
	r.n = 0
	if err := r.readAt(r.buf, pos); err != nil {
		return nil, err
	}
	r.start, r.n = pos, int(size)
	return r.buf[:n], nil
}

// endKind says how a replica's chain of records ended.
type endKind int

const (
	endClean   endKind = iota // zeros, or a record of an earlier lap or run
	endTorn                   // a damaged record no later record proves durable
	endCorrupt                // a damaged record that was durable
)

// scanResult is what scanning one replica found.
type scanResult struct {
	startLSN LSN    // first record of the chain (the superblock's tail)
	startPos uint64 //
	endLSN   LSN    // the record that was expected next and not found
	endPos   uint64 //
	end      endKind
	why      string // why the chain ended (endTorn, endCorrupt)
	corrupt  *CorruptionError
	starts   []uint64 // starts[i] is the position of startLSN+i
	bytes    uint64   // bytes of valid records
	lastHdr  recHeader
}

// scanner walks one replica's chain of records from its superblock tail.
type scanner struct {
	r    *areaReader
	sb   superblock
	seed uint32
	name string
}

// accept checks that a record with an intact header may follow a record of
// epoch prevEpoch: epochs never go back along the chain, and a record at or
// after the superblock's epochStart was written in that epoch or later.
// Together these reject whatever an earlier run left behind a truncated
// tail.
func (s *scanner) accept(h *recHeader, prevEpoch uint32) bool {
	if h.epoch < prevEpoch {
		return false
	}
	return h.lsn < s.sb.epochStart || h.epoch >= s.sb.epoch
}

// scan reads the chain of valid, consecutive records from the tail and
// classifies how it ends. Only I/O errors are returned as errors.
func (s *scanner) scan(keepStarts bool) (*scanResult, error) {
	res := &scanResult{startLSN: s.sb.tailLSN, startPos: s.sb.tailPos}
	limit := s.sb.tailPos + s.sb.areaSize
	pos, lsn := s.sb.tailPos, s.sb.tailLSN
	var prevEpoch uint32
	for {
		h, why, err := s.record(pos, lsn, prevEpoch, limit, true)
		if err != nil {
			return nil, err
		}
		if why != "" {
			res.endLSN, res.endPos, res.why = lsn, pos, why
			break
		}
		if keepStarts {
			res.starts = append(res.starts, pos)
		}
		res.bytes += h.size()
		res.lastHdr = h
		prevEpoch = h.epoch
		pos += h.size()
		lsn++
	}
	if err := s.classify(res, prevEpoch, limit); err != nil {
		return nil, err
	}
	return res, nil
}

// record checks the record expected at pos with LSN lsn. why is empty when
// it is valid; withPayload also checks the payload checksum.
func (s *scanner) record(pos uint64, lsn LSN, prevEpoch uint32, limit uint64, withPayload bool) (h recHeader, why string, err error) {
	if pos+headerSize > limit {
		return h, "end of area", nil
	}
	b, err := s.r.peek(pos, headerSize)
	if err != nil {
		return h, "", err
	}
	if isZero(b) {
		return h, "zeros", nil
	}
	h, why = decodeHeader(b, s.seed)
	switch {
	case why != "":
		return h, why, nil
	case h.lsn != lsn:
		return h, fmt.Sprintf("found lsn %d", h.lsn), nil
	case !s.accept(&h, prevEpoch):
		return h, fmt.Sprintf("record of epoch %d left by an earlier run", h.epoch), nil
	case pos+h.size() > limit:
		return h, "record overruns the area", nil
	}
	if withPayload && h.stored > 0 {
		p, err := s.r.peek(pos+headerSize, int(h.stored))
		if err != nil {
			return h, "", err
		}
		if crc32c(p) != h.pcrc {
			return h, "payload checksum mismatch", nil
		}
	}
	return h, "", nil
}

// classify decides whether the chain ended cleanly, at a torn write, or at
// corruption. A damaged or missing record E is corruption when it had been
// durable: when the superblock says so (nextLSN), or when a later record of
// the same history, written after E was synced, says so in its synced field.
// Otherwise it is a torn tail: an unsynced write the crash tore or lost
// (possibly out of order with later unsynced writes).
func (s *scanner) classify(res *scanResult, prevEpoch uint32, limit uint64) error {
	e, p := res.endLSN, res.endPos
	b, err := s.r.peek(p, min(headerSize, int(limit-min(p, limit))))
	if err != nil {
		return err
	}
	clean := len(b) < headerSize || isZero(b)
	var known *recHeader
	if !clean {
		h, why := decodeHeader(b, s.seed)
		switch {
		case why != "":
		case h.lsn < e || !s.accept(&h, prevEpoch):
			clean = true // an earlier lap or run: the normal end of the log
		case h.lsn == e:
			known = &h // intact header, damaged payload
		}
	}
	corrupt := func(why string) {
		res.end = endCorrupt
		res.corrupt = &CorruptionError{Device: s.name, Offset: s.r.physical(p), LSN: e, Reason: why}
	}
	if e < s.sb.nextLSN {
		corrupt(fmt.Sprintf("%s, but the superblock records lsn %d as durable", res.why, s.sb.nextLSN-1))
		return nil
	}
	if s.sb.flags&sbFlagClean != 0 && e == s.sb.nextLSN && p == s.sb.nextPos {
		res.end = endClean // closed cleanly right here: nothing can follow
		return nil
	}
	proof, later, err := s.findProof(p, e, known, prevEpoch, limit)
	if err != nil {
		return err
	}
	switch {
	case proof != 0:
		corrupt(fmt.Sprintf("%s, but lsn %d, written later, records lsn %d as durable", res.why, proof, e))
	case clean && !later:
		res.end = endClean
	default:
		res.end = endTorn
	}
	return nil
}

// findProof looks past a broken record E at p for later records of the
// same history and returns the LSN of the first one whose synced field
// covers E, or 0, and whether it saw any later record at all. The record after E starts within MaxRecordSize of p (right
// after E when E's header is intact); from there the chain is followed by
// headers, and each further break is searched past the same way.
func (s *scanner) findProof(p uint64, e LSN, known *recHeader, prevEpoch uint32, limit uint64) (proof LSN, later bool, err error) {
	next := LSN(0) // the LSN of the record at p when p is a known position
	if known != nil {
		p, next = p+known.size(), e+1
	}
	for p < limit {
		var cand uint64
		var h recHeader
		found := false
		if next != 0 {
			hh, why, err := s.record(p, next, prevEpoch, limit, false)
			if err != nil {
				return 0, later, err
			}
			cand, h, found = p, hh, why == ""
		}
		if !found {
			var err error
			cand, h, found, err = s.search(p, e, prevEpoch, limit)
			if err != nil || !found {
				return 0, later, err
			}
		}
		later = true
		// Follow the chain from the candidate by headers.
		pos, lsn := cand, h.lsn
		for {
			if h.synced >= e {
				return h.lsn, true, nil
			}
			prevEpoch = h.epoch
			pos += h.size()
			lsn++
			var why string
			var err error
			h, why, err = s.record(pos, lsn, prevEpoch, limit, false)
			if err != nil {
				return 0, later, err
			}
			if why != "" {
				break
			}
		}
		p, next = pos, 0
	}
	return 0, later, nil
}

// search scans the aligned positions in (p, p+MaxRecordSize] for an intact
// header of this log with an LSN above e that may follow epoch prevEpoch.
func (s *scanner) search(p uint64, e LSN, prevEpoch uint32, limit uint64) (uint64, recHeader, bool, error) {
	from := p + recordAlign
	to := min(p+MaxRecordSize, limit-headerSize) // last candidate position
	if from > to || limit < headerSize {
		return 0, recHeader{}, false, nil
	}
	win, err := s.r.peek(from, int(to-from)+headerSize)
	if err != nil {
		return 0, recHeader{}, false, err
	}
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], recordMagic)
	for i := 0; i+headerSize <= len(win); {
		j := bytes.Index(win[i:len(win)-headerSize+4], magic[:])
		if j < 0 {
			break
		}
		i += j
		if (from+uint64(i))%recordAlign != 0 {
			i++
			continue
		}
		h, why := decodeHeader(win[i:i+headerSize], s.seed)
		if why == "" && h.lsn > e && s.accept(&h, prevEpoch) && from+uint64(i)+h.size() <= limit {
			return from + uint64(i), h, true, nil
		}
		i += recordAlign
	}
	return 0, recHeader{}, false, nil
}
