package backend

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
)

const (
	metaWriteBuf = 1 << 20
	metaReadBuf  = 256 << 10
)

// MetaWriter receives the engine's encoding of one checkpoint or delta.
// Nothing is visible to LoadMeta before Commit returns nil. A MetaWriter is
// used by one goroutine at a time; writers of different files may run
// concurrently.
type MetaWriter interface {
	io.Writer
	// Commit writes the trailer, fsyncs the file, renames it into place and
	// fsyncs meta/. A meta file of the same kind and sequence number is
	// replaced atomically. After a failed Commit nothing is left behind.
	Commit() error
	// Abort discards the file. It is a no-op after Commit or Abort, so it
	// can be deferred.
	Abort() error
}

// CreateMeta starts a meta file of the given kind and sequence number
// (sequence numbers start at 1). On a device backend the meta records share
// one ring and are written one at a time: CreateMeta waits until the
// previous MetaWriter has committed or aborted.
func (s *Store) CreateMeta(kind MetaKind, seq uint64) (MetaWriter, error) {
	if !kind.valid() {
		return nil, fmt.Errorf("backend: create meta: unknown kind %v", kind)
	}
	if seq == 0 {
		return nil, errors.New("backend: create meta: sequence numbers start at 1")
	}
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if s.ring != nil {
		return s.ring.create(kind, seq), nil
	}
	final := filepath.Join(s.dir, metaDir, metaName(kind, seq))
	tmp := final + "." + strconv.FormatUint(s.tmpSeq.Add(1), 10) + tmpExt
	f, err := s.fsys.Create(tmp)
	if err != nil {
		return nil, fmt.Errorf("backend: create %v %d: %w", kind, seq, err)
	}
	w := &metaWriter{s: s, f: f, tmp: tmp, final: final, kind: kind, seq: seq,
		buf: make([]byte, metaHdrLen, metaWriteBuf)}
	putMetaHeader(w.buf, kind, seq, s.uuid)
	w.sum = crc(w.buf)
	return w, nil
}

type metaWriter struct {
	s          *Store
	f          File
	tmp, final string
	kind       MetaKind
	seq        uint64
	buf        []byte
	off        int64  // file offset of buf[0]
	n          uint64 // stream bytes written
	sum        uint32 // running CRC over header and stream
	err        error  // first write error; sticky
	done       bool
}

func (w *metaWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, ErrMetaDone
	}
	if w.err != nil {
		return 0, w.err
	}
	w.sum = crc32.Update(w.sum, castagnoli, p)
	w.n += uint64(len(p))
	return bufferedWrite(&w.buf, p, w.flush)
}

func (w *metaWriter) flush() error {
	if _, err := w.f.WriteAt(w.buf, w.off); err != nil {
		w.err = fmt.Errorf("backend: write %v %d: %w", w.kind, w.seq, err)
		return w.err
	}
	w.off += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

func (w *metaWriter) Commit() error {
	if w.done {
		return ErrMetaDone
	}
	w.done = true
	if err := w.commit(); err != nil {
		w.f.Close()
		if rerr := w.s.fsys.Remove(w.tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			w.s.log.WithError(rerr).WithField("name", w.tmp).Warn("cannot remove failed meta file")
		}
		return err
	}
	return nil
}

func (w *metaWriter) commit() error {
	if w.err != nil {
		return w.err
	}
	if w.s.closed.Load() {
		return ErrClosed
	}
	var tr [metaTrailerLen]byte
	le.PutUint64(tr[:8], w.n) // the CRC covers the length field too
	putMetaTrailer(tr[:], w.n, crc32.Update(w.sum, castagnoli, tr[:8]))
	if len(w.buf)+metaTrailerLen > cap(w.buf) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.buf = append(w.buf, tr[:]...)
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("backend: sync %v %d: %w", w.kind, w.seq, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("backend: close %v %d: %w", w.kind, w.seq, err)
	}
	if err := w.s.fsys.Rename(w.tmp, w.final); err != nil {
		return fmt.Errorf("backend: commit %v %d: %w", w.kind, w.seq, err)
	}
	if err := w.s.fsys.SyncDir(filepath.Dir(w.final)); err != nil {
		// The file is complete and in place, but its name may not survive a
		// crash; the caller must treat the commit as failed (a retry with
		// the same sequence number replaces it).
		return fmt.Errorf("backend: commit %v %d: sync meta directory: %w", w.kind, w.seq, err)
	}
	w.s.log.WithFields(logrus.Fields{"kind": w.kind, "seq": w.seq, "bytes": w.n}).Debug("meta committed")
	return nil
}

func (w *metaWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := w.s.fsys.Remove(w.tmp); err != nil {
		return fmt.Errorf("backend: abort %v %d: %w", w.kind, w.seq, err)
	}
	return nil
}

// MetaFile is a committed checkpoint or delta found by LoadMeta.
type MetaFile struct {
	Kind MetaKind
	Seq  uint64
	Size int64 // length of the engine's stream, in bytes

	s    *Store
	path string
	rec  ringRec // on a device: the record in the meta ring
}

// Open returns a reader of the engine's stream. The CRC is verified when the
// last byte is read: the Read that reaches the end, and every later Read,
// returns a *CorruptionError instead of io.EOF on a mismatch. Close verifies
// too, reading whatever the caller left unread, so a decoder that stops at
// the end of its own encoding still learns of corruption.
func (m *MetaFile) Open() (io.ReadCloser, error) {
	if m.s.ring != nil {
		if m.s.closed.Load() {
			return nil, ErrClosed
		}
		return m.s.ring.open(m.path, m.rec)
	}
	f, size, sum, err := m.s.openMeta(m.path, m.Kind, m.Seq)
	if err != nil {
		return nil, err
	}
	return &metaReader{
		f: f, path: m.path, size: size, sum: sum,
		br: bufio.NewReaderSize(io.NewSectionReader(f, metaHdrLen, size), metaReadBuf),
	}, nil
}

type metaReader struct {
	f      File
	path   string
	br     *bufio.Reader
	size   int64  // stream length from the trailer
	got    int64  // stream bytes delivered
	sum    uint32 // running CRC
	err    error  // io.EOF once verified, or the verification error
	closed bool
}

func (r *metaReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.br.Read(p)
	r.sum = crc32.Update(r.sum, castagnoli, p[:n])
	r.got += int64(n)
	switch {
	case r.got == r.size:
		r.err = r.finish()
		if r.err != io.EOF {
			return n, r.err
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	case err == io.EOF:
		e := corruptf(r.path, metaHdrLen+r.got, "stream ends after %d of %d bytes", r.got, r.size)
		e.Err = io.ErrUnexpectedEOF
		r.err = e
		return n, r.err
	case err != nil:
		r.err = fmt.Errorf("backend: read %s: %w", r.path, err)
		return n, r.err
	}
	return n, nil
}

// finish checks the trailer against the stream read; io.EOF means valid.
func (r *metaReader) finish() error {
	var tr [metaTrailerLen]byte
	if _, err := r.f.ReadAt(tr[:], metaHdrLen+r.size); err != nil {
		if err == io.EOF {
			return corruptf(r.path, metaHdrLen+r.size, "trailer truncated")
		}
		return fmt.Errorf("backend: read %s: %w", r.path, err)
	}
	if string(tr[12:16]) != metaTrailMagic || int64(le.Uint64(tr[:])) != r.size {
		return corruptf(r.path, metaHdrLen+r.size, "trailer changed while reading")
	}
	want := le.Uint32(tr[8:])
	if got := crc32.Update(r.sum, castagnoli, tr[:8]); got != want {
		return corruptf(r.path, -1, "crc 0x%08x, trailer says 0x%08x", got, want)
	}
	return io.EOF
}

func (r *metaReader) Close() error {
	if r.closed {
		return nil
	}
	if r.err == nil {
		io.Copy(io.Discard, r) // sets r.err
	}
	r.closed = true
	cerr := r.f.Close()
	if r.err != io.EOF {
		return r.err
	}
	return cerr
}

// openMeta opens a committed meta file and checks what can be checked
// without reading the stream: header, trailer magic and length against the
// file size. It returns the file, the stream length and the CRC of the header.
func (s *Store) openMeta(path string, kind MetaKind, seq uint64) (File, int64, uint32, error) {
	if s.closed.Load() {
		return nil, 0, 0, ErrClosed
	}
	f, err := s.fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("backend: open %s: %w", path, err)
	}
	size, sum, err := checkMetaFile(f, path, kind, seq, s.uuid)
	if err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	return f, size, sum, nil
}

func checkMetaFile(f File, path string, kind MetaKind, seq uint64, uuid [16]byte) (int64, uint32, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("backend: stat %s: %w", path, err)
	}
	fsize := st.Size()
	if fsize < metaHdrLen+metaTrailerLen {
		return 0, 0, corruptf(path, -1, "meta file of %d bytes is shorter than header and trailer", fsize)
	}
	var hdr [metaHdrLen]byte
	var tr [metaTrailerLen]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return 0, 0, fmt.Errorf("backend: read %s: %w", path, err)
	}
	if err := checkMetaHeader(path, hdr[:], kind, seq, uuid); err != nil {
		return 0, 0, err
	}
	if _, err := f.ReadAt(tr[:], fsize-metaTrailerLen); err != nil {
		return 0, 0, fmt.Errorf("backend: read %s: %w", path, err)
	}
	if string(tr[12:16]) != metaTrailMagic {
		return 0, 0, corruptf(path, fsize-metaTrailerLen, "bad trailer magic (file truncated or torn)")
	}
	if n := le.Uint64(tr[:]); n != uint64(fsize-metaHdrLen-metaTrailerLen) {
		return 0, 0, corruptf(path, fsize-metaTrailerLen, "trailer says %d stream bytes, file holds %d",
			n, fsize-metaHdrLen-metaTrailerLen)
	}
	return fsize - metaHdrLen - metaTrailerLen, crc(hdr[:]), nil
}

type metaEntry struct {
	kind MetaKind
	seq  uint64
	path string
}

// listMeta returns the committed meta files, sorted by sequence number. A
// name with a meta prefix that does not parse is corruption; other names are
// logged and ignored.
func (s *Store) listMeta() ([]metaEntry, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	mdir := filepath.Join(s.dir, metaDir)
	ents, err := s.fsys.ReadDir(mdir)
	if err != nil {
		return nil, fmt.Errorf("backend: list meta: %w", err)
	}
	var out []metaEntry
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, tmpExt) {
			continue // being written (uncommitted files of dead processes are removed at Open)
		}
		kind, seq, ours, ok := parseMetaName(name)
		switch {
		case !ours:
			s.log.WithField("name", name).Warn("ignoring unknown entry in meta directory")
			continue
		case !ok:
			return nil, corruptf(filepath.Join(mdir, name), -1, "malformed meta file name")
		case !e.Type().IsRegular():
			return nil, corruptf(filepath.Join(mdir, name), -1, "meta entry is not a regular file")
		}
		out = append(out, metaEntry{kind: kind, seq: seq, path: filepath.Join(mdir, name)})
	}
	slices.SortFunc(out, func(a, b metaEntry) int {
		if c := cmp.Compare(a.seq, b.seq); c != 0 {
			return c
		}
		return int(a.kind) - int(b.kind)
	})
	return out, nil
}

func (s *Store) metaFile(e metaEntry) (*MetaFile, error) {
	f, size, _, err := s.openMeta(e.path, e.kind, e.seq)
	if err != nil {
		return nil, err
	}
	f.Close()
	return &MetaFile{Kind: e.kind, Seq: e.seq, Size: size, s: s, path: e.path}, nil
}

// LoadMeta returns the newest checkpoint (nil if there is none) and the
// deltas with a higher sequence number, in order. Headers, lengths and the
// sequence are checked here: a corrupt file or a gap in the deltas is an
// error, never skipped. Stream CRCs are checked by the readers.
func (s *Store) LoadMeta() (cp *MetaFile, deltas []*MetaFile, err error) {
	if s.ring != nil {
		if s.closed.Load() {
			return nil, nil, ErrClosed
		}
		return s.ring.load(s)
	}
	ents, err := s.listMeta()
	if err != nil {
		return nil, nil, err
	}
	var base uint64 // sequence number covered by the checkpoint
	for i := len(ents) - 1; i >= 0; i-- {
		if ents[i].kind == MetaCheckpoint {
			if cp, err = s.metaFile(ents[i]); err != nil {
				return nil, nil, err
			}
			base = cp.Seq
			break
		}
	}
	next := base + 1
	for _, e := range ents {
		if e.kind != MetaDelta || e.seq <= base {
			continue
		}
		if e.seq != next {
			return nil, nil, &CorruptionError{
				Path: filepath.Join(s.dir, metaDir, metaName(MetaDelta, next)), Offset: -1,
				Reason: fmt.Sprintf("missing (checkpoint %d, next delta found is %d)", base, e.seq),
				Err:    ErrMetaGap,
			}
		}
		d, err := s.metaFile(e)
		if err != nil {
			return nil, nil, err
		}
		deltas = append(deltas, d)
		next++
	}
	return cp, deltas, nil
}

// RemoveMetaBefore deletes the checkpoints and deltas superseded by
// checkpoint seq: checkpoints below seq and deltas up to seq. Checkpoint seq
// must exist and pass its header checks, so a wrong number cannot delete the
// only copy of the metadata.
func (s *Store) RemoveMetaBefore(seq uint64) error {
	if s.ring != nil {
		if s.closed.Load() {
			return ErrClosed
		}
		return s.ring.removeBefore(seq)
	}
	path := filepath.Join(s.dir, metaDir, metaName(MetaCheckpoint, seq))
	if _, err := s.metaFile(metaEntry{kind: MetaCheckpoint, seq: seq, path: path}); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %d", ErrNoCheckpoint, seq)
		}
		return err
	}
	ents, err := s.listMeta()
	if err != nil {
		return err
	}
	var errs []error
	removed := 0
	for _, e := range ents {
		if (e.kind == MetaCheckpoint && e.seq < seq) || (e.kind == MetaDelta && e.seq <= seq) {
			if err := s.fsys.Remove(e.path); err != nil {
				errs = append(errs, fmt.Errorf("backend: remove %v %d: %w", e.kind, e.seq, err))
				continue
			}
			removed++
		}
	}
	if removed > 0 {
		if err := s.fsys.SyncDir(filepath.Join(s.dir, metaDir)); err != nil {
			errs = append(errs, fmt.Errorf("backend: sync meta directory: %w", err))
		}
	}
	s.log.WithFields(logrus.Fields{"checkpoint": seq, "removed": removed}).Debug("old meta removed")
	return errors.Join(errs...)
}

// MetaRoom reports the space left for meta records. limited is false for a
// directory backend, whose meta files take what the filesystem has; on a
// device the meta ring is fixed, and free is what one more record may take
// without overwriting the live checkpoint and deltas.
func (s *Store) MetaRoom() (free int64, limited bool) {
	if s.ring == nil {
		return 0, false
	}
	return s.ring.room(), true
}

// bufferedWrite copies p into *buf, calling flush (which empties *buf)
// whenever the buffer is full, and returns how many bytes it took.
func bufferedWrite(buf *[]byte, p []byte, flush func() error) (int, error) {
	written := 0
	for len(p) > 0 {
		k := copy((*buf)[len(*buf):cap(*buf)], p)
		*buf = (*buf)[:len(*buf)+k]
		p = p[k:]
		written += k
		if len(*buf) == cap(*buf) {
			if err := flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}
