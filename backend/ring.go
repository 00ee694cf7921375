package backend

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"
)

// The meta ring of a device backend holds checkpoints and deltas as
// records, written one after another in a logical byte space that wraps
// around the meta region (logical offset L is at device offset
// MetaOff + L mod MetaSize). A record is 4 KiB aligned:
//
//	+--------------------+---------------------------------+
//	| header (4 KiB)     | engine's byte stream, 0-padded  |
//	+--------------------+---------------------------------+
//
//	header:
//	offset size field
//	     0    8 magic "DCBKMREC"
//	     8    4 format version (1)
//	    12    4 kind: 1 checkpoint, 2 delta
//	    16    8 sequence number
//	    24   16 filesystem uuid
//	    40    8 logical offset of the record
//	    48    8 stream length N
//	    56    4 CRC-32C of the stream
//	    60    4 CRC-32C of bytes 0..59
//
// Commit writes the stream, syncs, writes the header, syncs: a valid
// header is the commit point, so a record whose header is torn or missing
// was never committed. Opening reads the whole region and keeps the valid
// headers whose logical offset matches their place; the newest checkpoint
// (highest sequence number, then highest offset) and the deltas after it
// (the latest record of each sequence number) are the metadata, exactly as
// the files of a backend directory. Records older than the newest
// checkpoint, and those RemoveMetaBefore drops, are free space.
//
// Room: a record may only overwrite space behind the oldest live record
// (the tail). A delta must moreover leave room for a checkpoint as large as
// the live records and itself together (plus 256 KiB), so that the deltas
// can always be replaced by a checkpoint. When the ring cannot hold a
// record, its Write or Commit fails with ErrMetaFull and nothing live is
// touched; the engine then writes a checkpoint instead of the delta.
// MetaRoom tells the engine how much is left, so that it checkpoints
// before deltas are refused. One meta record is written at a time:
// CreateMeta waits until the previous writer has committed or aborted.
const (
	ringMagic  = "DCBKMREC"
	ringHdrLen = 64
)

// ErrMetaFull: the meta ring of a device has no room for the record; it wraps ENOSPC.
var ErrMetaFull = fmt.Errorf("backend: meta ring full: %w", syscall.ENOSPC)

type ringRec struct {
	kind MetaKind
	seq  uint64
	off  uint64 // logical offset of the header
	n    int64  // stream length
	sum  uint32 // stream CRC
}

func (r ringRec) end() uint64 { return r.off + BlockSize + uint64(alignUp(r.n)) }

type metaRing struct {
	name string
	dev  Device
	base int64  // device offset of the region
	size uint64 // region length
	uuid [16]byte
	log  *logrus.Entry

	writer chan struct{} // one token: held by the open MetaWriter

	mu   sync.Mutex
	head uint64    // logical offset where the next record starts
	live []ringRec // records LoadMeta may return, by logical offset
}

// ringSlack is room a delta leaves free beyond its estimate of the next
// checkpoint (see limitLocked).
const ringSlack = 256 << 10

// liveLocked is the ring space of the live records.
func (r *metaRing) liveLocked() uint64 {
	var n uint64
	for _, rec := range r.live {
		n += rec.end() - rec.off
	}
	return n
}

// limitLocked is the logical offset a record starting at off may not reach
// when it ends at end. A checkpoint may fill the ring up to the tail. A
// delta must leave room for the checkpoint that will replace it and the
// live records: at most as large as they are together, plus ringSlack; so
// the ring never holds deltas it has no room to checkpoint.
func (r *metaRing) limitLocked(kind MetaKind, off, end uint64) uint64 {
	limit := r.tailLocked() + r.size
	if kind == MetaDelta {
		reserve := r.liveLocked() + (end - off) + ringSlack
		if reserve >= limit {
			return 0
		}
		limit -= reserve
	}
	return limit
}

func (r *metaRing) tailLocked() uint64 {
	if len(r.live) == 0 {
		return r.head
	}
	return r.live[0].off
}

// room is the free space of the ring, in bytes.
func (r *metaRing) room() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int64(r.size - (r.head - r.tailLocked()))
}

// writeAt writes p at logical offset off, splitting it at the region's end.
func (r *metaRing) writeAt(p []byte, off uint64) error {
	for len(p) > 0 {
		pos := off % r.size
		k := min(uint64(len(p)), r.size-pos)
		if _, err := r.dev.WriteAt(p[:k], r.base+int64(pos)); err != nil {
			return err
		}
		p, off = p[k:], off+k
	}
	return nil
}

// ReadAt reads at logical offset off; it makes the ring an io.ReaderAt.
func (r *metaRing) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		pos := (uint64(off) + uint64(done)) % r.size
		k := min(uint64(len(p)-done), r.size-pos)
		n, err := r.dev.ReadAt(p[done:done+int(k)], r.base+int64(pos))
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (r *metaRing) encodeHeader(rec ringRec) []byte {
	b := make([]byte, BlockSize)
	copy(b[0:8], ringMagic)
	le.PutUint32(b[8:], FormatVersion)
	le.PutUint32(b[12:], uint32(rec.kind))
	le.PutUint64(b[16:], rec.seq)
	copy(b[24:40], r.uuid[:])
	le.PutUint64(b[40:], rec.off)
	le.PutUint64(b[48:], uint64(rec.n))
	le.PutUint32(b[56:], rec.sum)
	le.PutUint32(b[60:], crc(b[:60]))
	return b
}

// decodeHeader returns the record whose header is b, found at region
// position pos; ok is false for anything that is not a committed header of
// this ring at this place.
func (r *metaRing) decodeHeader(b []byte, pos uint64) (rec ringRec, ok bool, err error) {
	if string(b[0:8]) != ringMagic || le.Uint32(b[60:]) != crc(b[:60]) || [16]byte(b[24:40]) != r.uuid {
		return ringRec{}, false, nil
	}
	if v := le.Uint32(b[8:]); v != FormatVersion {
		return ringRec{}, false, fmt.Errorf("%w: meta record at %s+%d has format version %d, this build reads version %d",
			ErrVersion, r.name, r.base+int64(pos), v, FormatVersion)
	}
	rec = ringRec{kind: MetaKind(le.Uint32(b[12:])), seq: le.Uint64(b[16:]), off: le.Uint64(b[40:]),
		n: int64(le.Uint64(b[48:])), sum: le.Uint32(b[56:])}
	if !rec.kind.valid() || rec.seq == 0 || rec.off%r.size != pos || rec.n < 0 ||
		uint64(alignUp(rec.n))+BlockSize > r.size {
		return ringRec{}, false, nil
	}
	return rec, true, nil
}

// loadMetaRing reads the meta region of dev and finds the live records.
func loadMetaRing(name string, dev Device, l *devLayout, log *logrus.Entry) (*metaRing, error) {
	r := &metaRing{name: name, dev: dev, base: l.metaOff, size: uint64(l.metaSize), uuid: l.uuid,
		log: log, writer: make(chan struct{}, 1)}
	var all []ringRec
	chunk := make([]byte, min(r.size, 1<<20))
	for pos := uint64(0); pos < r.size; pos += uint64(len(chunk)) {
		b := chunk[:min(uint64(len(chunk)), r.size-pos)]
		if _, err := dev.ReadAt(b, r.base+int64(pos)); err != nil {
			return nil, fmt.Errorf("backend: read meta region of %s: %w", name, err)
		}
		for i := 0; i < len(b); i += BlockSize {
			rec, ok, err := r.decodeHeader(b[i:i+BlockSize], pos+uint64(i))
			if err != nil {
				return nil, err
			}
			if ok {
				all = append(all, rec)
			}
		}
	}
	for _, rec := range all {
		r.head = max(r.head, rec.end())
	}
	// Records from before the last lap cannot be live: their place has
	// been written over since (they survive only where a later record's
	// header was torn).
	all = slices.DeleteFunc(all, func(rec ringRec) bool { return r.head > r.size && rec.off < r.head-r.size })
	slices.SortFunc(all, func(a, b ringRec) int { return cmp.Compare(a.off, b.off) })
	r.live = selectLive(all)
	log.WithFields(logrus.Fields{"records": len(all), "live": len(r.live), "head": r.head}).Debug("meta ring loaded")
	return r, nil
}

// selectLive returns the newest checkpoint and the deltas after it (the
// latest record of each sequence number), ordered by logical offset. A gap
// is left for LoadMeta to report.
func selectLive(all []ringRec) []ringRec {
	var cp *ringRec
	for i := range all {
		if all[i].kind == MetaCheckpoint && (cp == nil || all[i].seq >= cp.seq) {
			cp = &all[i]
		}
	}
	var base uint64
	if cp != nil {
		base = cp.seq
	}
	latest := map[uint64]ringRec{}
	for _, rec := range all {
		if rec.kind == MetaDelta && rec.seq > base {
			latest[rec.seq] = rec // all is in logical order: the last one wins
		}
	}
	var live []ringRec
	if cp != nil {
		live = append(live, *cp)
	}
	for _, rec := range latest {
		live = append(live, rec)
	}
	slices.SortFunc(live, func(a, b ringRec) int { return cmp.Compare(a.off, b.off) })
	return live
}

func (r *metaRing) create(kind MetaKind, seq uint64) MetaWriter {
	r.writer <- struct{}{}
	r.mu.Lock()
	off := r.head
	r.mu.Unlock()
	return &ringWriter{r: r, rec: ringRec{kind: kind, seq: seq, off: off}, buf: make([]byte, 0, metaWriteBuf)}
}

type ringWriter struct {
	r    *metaRing
	rec  ringRec
	buf  []byte
	pos  uint64 // logical offset of buf[0]
	err  error
	done bool
}

func (w *ringWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, ErrMetaDone
	}
	if w.err != nil {
		return 0, w.err
	}
	w.rec.sum = crc32.Update(w.rec.sum, castagnoli, p)
	w.rec.n += int64(len(p))
	return bufferedWrite(&w.buf, p, w.flush)
}

// flush writes the buffer (padded to 4 KiB when it is the last piece)
// after checking that it overwrites nothing live.
func (w *ringWriter) flush() error {
	start := w.rec.off + BlockSize + w.pos
	end := start + uint64(alignUp(int64(len(w.buf))))
	w.r.mu.Lock()
	limit := w.r.limitLocked(w.rec.kind, w.rec.off, end)
	w.r.mu.Unlock()
	if end > limit {
		w.err = fmt.Errorf("%w: %v %d of %d bytes or more does not fit (ring of %d bytes)", ErrMetaFull,
			w.rec.kind, w.rec.seq, end-w.rec.off, w.r.size)
		return w.err
	}
	p := w.buf[:end-start]
	clear(p[len(w.buf):])
	if err := w.r.writeAt(p, start); err != nil {
		w.err = fmt.Errorf("backend: write %v %d: %w", w.rec.kind, w.rec.seq, err)
		return w.err
	}
	w.pos += uint64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

func (w *ringWriter) Commit() error {
	if w.done {
		return ErrMetaDone
	}
	w.done = true
	defer func() { <-w.r.writer }()
	if w.err != nil {
		return w.err
	}
	if err := w.flush(); err != nil {
		return err
	}
	w.r.mu.Lock()
	limit := w.r.limitLocked(w.rec.kind, w.rec.off, w.rec.end())
	w.r.mu.Unlock()
	if w.rec.end() > limit {
		return fmt.Errorf("%w: %v %d of %d bytes does not fit (ring of %d bytes)", ErrMetaFull,
			w.rec.kind, w.rec.seq, w.rec.end()-w.rec.off, w.r.size)
	}
	if err := w.r.dev.Sync(); err != nil {
		return fmt.Errorf("backend: sync %v %d: %w", w.rec.kind, w.rec.seq, err)
	}
	if err := w.r.writeAt(w.r.encodeHeader(w.rec), w.rec.off); err != nil {
		return fmt.Errorf("backend: commit %v %d: %w", w.rec.kind, w.rec.seq, err)
	}
	// The header may be on the device even when the sync fails; the
	// record then counts as written, and a retry with the same sequence
	// number supersedes it.
	w.r.mu.Lock()
	w.r.head = w.rec.end()
	w.r.live = append(w.r.live, w.rec)
	w.r.mu.Unlock()
	if err := w.r.dev.Sync(); err != nil {
		return fmt.Errorf("backend: commit %v %d: sync: %w", w.rec.kind, w.rec.seq, err)
	}
	w.r.log.WithFields(logrus.Fields{"kind": w.rec.kind, "seq": w.rec.seq, "bytes": w.rec.n, "at": w.rec.off}).Debug("meta committed")
	return nil
}

func (w *ringWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	<-w.r.writer
	return nil
}

// load returns the live records as LoadMeta does for a directory.
func (r *metaRing) load(s *Store) (cp *MetaFile, deltas []*MetaFile, err error) {
	r.mu.Lock()
	live := slices.Clone(r.live)
	r.mu.Unlock()
	byseq := map[uint64]ringRec{}
	var base uint64
	for _, rec := range live {
		if rec.kind == MetaCheckpoint && (cp == nil || rec.seq >= cp.Seq) {
			cp = &MetaFile{Kind: rec.kind, Seq: rec.seq, Size: rec.n, s: s, path: r.recName(rec), rec: rec}
			base = rec.seq
		}
	}
	for _, rec := range live {
		if rec.kind == MetaDelta && rec.seq > base {
			byseq[rec.seq] = rec
		}
	}
	seqs := make([]uint64, 0, len(byseq))
	for q := range byseq {
		seqs = append(seqs, q)
	}
	slices.Sort(seqs)
	next := base + 1
	for _, q := range seqs {
		if q != next {
			return nil, nil, &CorruptionError{Path: r.name, Offset: -1,
				Reason: fmt.Sprintf("delta %d missing (checkpoint %d, next delta found is %d)", next, base, q),
				Err:    ErrMetaGap}
		}
		rec := byseq[q]
		deltas = append(deltas, &MetaFile{Kind: rec.kind, Seq: rec.seq, Size: rec.n, s: s, path: r.recName(rec), rec: rec})
		next++
	}
	return cp, deltas, nil
}

func (r *metaRing) recName(rec ringRec) string {
	return fmt.Sprintf("%s meta ring %v %d at %d", r.name, rec.kind, rec.seq, rec.off)
}

// removeBefore drops checkpoints below seq and deltas up to seq from the
// live records; their space becomes free. Nothing is written: after a
// reopen the newest checkpoint supersedes them anyway.
func (r *metaRing) removeBefore(seq uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.ContainsFunc(r.live, func(rec ringRec) bool { return rec.kind == MetaCheckpoint && rec.seq == seq }) {
		return fmt.Errorf("%w: %d", ErrNoCheckpoint, seq)
	}
	before := len(r.live)
	r.live = slices.DeleteFunc(r.live, func(rec ringRec) bool {
		return (rec.kind == MetaCheckpoint && rec.seq < seq) || (rec.kind == MetaDelta && rec.seq <= seq)
	})
	r.log.WithFields(logrus.Fields{"checkpoint": seq, "removed": before - len(r.live)}).Debug("old meta removed")
	return nil
}

// open returns a reader of rec's stream that verifies its CRC at the end,
// like the reader of a meta file.
func (r *metaRing) open(path string, rec ringRec) (io.ReadCloser, error) {
	hdr := make([]byte, BlockSize)
	if _, err := r.ReadAt(hdr, int64(rec.off)); err != nil {
		return nil, fmt.Errorf("backend: read %s: %w", path, err)
	}
	got, ok, err := r.decodeHeader(hdr, rec.off%r.size)
	if err != nil {
		return nil, err
	}
	if !ok || got != rec {
		return nil, corruptf(path, -1, "record header overwritten or damaged")
	}
	return &ringReader{path: path, rec: rec,
		br: bufio.NewReaderSize(io.NewSectionReader(r, int64(rec.off)+BlockSize, rec.n), metaReadBuf)}, nil
}

type ringReader struct {
	path string
	rec  ringRec
	br   *bufio.Reader
	got  int64
	sum  uint32
	err  error
}

func (r *ringReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.br.Read(p)
	r.sum = crc32.Update(r.sum, castagnoli, p[:n])
	r.got += int64(n)
	switch {
	case r.got == r.rec.n:
		if r.sum != r.rec.sum {
			r.err = corruptf(r.path, -1, "crc 0x%08x, header says 0x%08x", r.sum, r.rec.sum)
			return n, r.err
		}
		r.err = io.EOF
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	case err != nil && !errors.Is(err, io.EOF):
		r.err = fmt.Errorf("backend: read %s: %w", r.path, err)
		return n, r.err
	case err != nil:
		r.err = corruptf(r.path, -1, "stream ends after %d of %d bytes", r.got, r.rec.n)
		return n, r.err
	}
	return n, nil
}

func (r *ringReader) Close() error {
	if r.err == nil {
		io.Copy(io.Discard, r)
	}
	if r.err != io.EOF {
		return r.err
	}
	return nil
}
