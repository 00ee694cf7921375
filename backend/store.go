package backend

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
)

// Limits and defaults of Config.
const (
	DefaultSegmentSize = 64 << 20
	MinSegmentSize     = 1 << 20
	MaxSegmentSize     = 4 << 30

	DefaultWriteBuffer = 4 << 20
	MinWriteBuffer     = MaxRecordLen
	MaxWriteBuffer     = 256 << 20

	// maxOpenSegments bounds the read descriptors kept open.
	maxOpenSegments = 64
)

// Config tunes a Store. The zero value is valid.
type Config struct {
	// SegmentSize is the data capacity of one segment: records (with their
	// padding) are appended until the next one does not fit, then a new
	// segment starts. The file adds a 4 KiB header. Default 64 MiB; a
	// multiple of 4 KiB in [1 MiB, 4 GiB]. For an existing backend the value
	// recorded in its superblock wins (a different value here is logged).
	SegmentSize int64
	// WriteBuffer is the size of the write buffer through which Append
	// writes segments. Default 4 MiB; a multiple of 4 KiB in [1 MiB, 256 MiB].
	WriteBuffer int
	// Buffered writes a directory backend's segments through the page
	// cache instead of with direct I/O (see dirSpace.create). Direct I/O
	// falls back to buffered by itself on a filesystem that refuses it.
	Buffered bool
}

// alignedBuf returns an empty buffer of capacity n whose first byte is
// BlockSize-aligned in memory, as direct I/O requires.
func alignedBuf(n int) []byte {
	b := make([]byte, n+BlockSize)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & (BlockSize - 1))
	return b[off : off : off+n]
}

func checkSegmentSize(n int64) error {
	if n < MinSegmentSize || n > MaxSegmentSize || n%BlockSize != 0 {
		return fmt.Errorf("%d is not a multiple of %d in [%d, %d]", n, BlockSize, MinSegmentSize, MaxSegmentSize)
	}
	return nil
}

// withDefaults validates c and fills in defaults; every problem is reported.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.SegmentSize == 0 {
		c.SegmentSize = DefaultSegmentSize
	} else if err := checkSegmentSize(c.SegmentSize); err != nil {
		errs = append(errs, fmt.Errorf("%w: segment size: %v", ErrConfig, err))
	}
	if c.WriteBuffer == 0 {
		c.WriteBuffer = DefaultWriteBuffer
	} else if c.WriteBuffer < MinWriteBuffer || c.WriteBuffer > MaxWriteBuffer || c.WriteBuffer%BlockSize != 0 {
		errs = append(errs, fmt.Errorf("%w: write buffer: %d is not a multiple of %d in [%d, %d]",
			ErrConfig, c.WriteBuffer, BlockSize, MinWriteBuffer, MaxWriteBuffer))
	}
	return c, errors.Join(errs...)
}

// Store is an open backend directory.
type Store struct {
	fsys  FS
	dir   string
	log   *logrus.Entry
	uuid  [16]byte
	segSz int64 // data capacity of a segment, from the superblock
	lock  io.Closer
	space segSpace  // where the segments are
	ring  *metaRing // the meta ring of a device backend; nil for a directory
	name  string    // the directory or device, for messages

	closed  atomic.Bool
	tmpSeq  atomic.Uint64 // makes meta temp names unique
	handles handleCache

	// mu serialises the writers: Append, Sync, RemoveSegment, Close.
	mu      sync.Mutex
	active  *segWriter   // segment being appended to; nil before the first Append and after a failure
	sealed  []*segWriter // full segments written since the last Sync, awaiting fdatasync
	newFile bool         // a segment file was created since the last Sync: segments/ needs fsync
	nextSeg uint64       // number of the next segment to create
	buf     []byte       // write buffer of the active segment; cap = Config.WriteBuffer

	// vis guards what readers look at. Written with mu held too.
	vis struct {
		sync.RWMutex
		bufOff   int64            // file offset of buf[0] in the active segment
		activeNo uint64           // number of the active segment, 0 if none
		sizes    map[uint64]int64 // every segment's length: header + records (buffered ones included)
		voided   map[uint64]int64 // failed segments: data at or past this offset is void
	}
}

// segWriter is a segment being written by this process.
type segWriter struct {
	num    uint64
	f      File
	end    int64 // logical end: header and every record appended, buffered or not
	synced int64 // end of the prefix made durable by Sync
}

// Open opens the backend in dir, creating a fresh one (new uuid) when dir does
// not exist or is empty. It modifies nothing when it refuses: a non-empty
// directory without a superblock (ErrNotBackend), a superblock of another
// format version (ErrVersion), a corrupt superblock (CorruptionError), or a
// directory locked by another process (ErrInUse, naming the holder's pid).
func Open(fsys FS, dir string, cfg Config, log *logrus.Entry) (s *Store, created bool, err error) {
	askedSegSize := cfg.SegmentSize
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, false, err
	}
	log = orDiscard(log)
	log = log.WithField("dir", dir)

	// Look before locking: taking the lock writes the lock file, and a
	// directory that is refused must stay as it was.
	made := false
	st, err := fsys.Stat(dir)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		if err := makeDir(fsys, dir); err != nil {
			return nil, false, err
		}
		made = true
	case err != nil:
		return nil, false, fmt.Errorf("backend: stat %s: %w", dir, err)
	case !st.IsDir():
		return nil, false, fmt.Errorf("%w: %s is not a directory", ErrNotBackend, dir)
	}
	if !made {
		if _, _, err := inspect(fsys, dir); err != nil {
			return nil, false, err
		}
	}

	lock, err := fsys.Lock(filepath.Join(dir, lockName))
	if err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, fmt.Errorf("%w: %s is locked by pid %s", ErrInUse, dir, lockHolder(fsys, dir))
		}
		return nil, false, fmt.Errorf("backend: lock %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()

	// Look again under the lock: another process may have created the
	// backend between the first look and the lock.
	sb, fresh, err := inspect(fsys, dir)
	if err != nil {
		return nil, false, err
	}
	if fresh {
		if sb, err = create(fsys, dir, cfg.SegmentSize); err != nil {
			return nil, false, err
		}
	}
	if !fresh && askedSegSize != 0 && sb.segmentSize != askedSegSize {
		log.WithFields(logrus.Fields{"configured": cfg.SegmentSize, "superblock": sb.segmentSize}).
			Warn("segment size differs from the backend's; using the backend's")
	}

	s = newStore(log, sb.uuid, sb.segmentSize, lock, cfg)
	s.fsys, s.dir, s.name = fsys, dir, dir
	direct := !cfg.Buffered
	s.space = dirSpace{fsys: fsys, dir: filepath.Join(dir, segmentsDir), log: log, direct: &direct}
	if err := s.scan(); err != nil {
		return nil, false, err
	}
	if err := s.removeTemps(); err != nil {
		return nil, false, err
	}
	s.logOpen(fresh)
	return s, fresh, nil
}

func newStore(log *logrus.Entry, uuid [16]byte, segSz int64, lock io.Closer, cfg Config) *Store {
	s := &Store{
		log:   log,
		uuid:  uuid,
		segSz: segSz,
		lock:  lock,
		buf:   alignedBuf(cfg.WriteBuffer),
	}
	s.handles.init(s, maxOpenSegments)
	s.vis.sizes = make(map[uint64]int64)
	s.vis.voided = make(map[uint64]int64)
	return s
}

func (s *Store) logOpen(created bool) {
	s.log.WithFields(logrus.Fields{
		"uuid": fmt.Sprintf("%x", s.uuid), "created": created, "segments": len(s.vis.sizes),
		"next_segment": s.nextSeg, "segment_size": s.segSz, "pid": os.Getpid(),
	}).Info("backend open")
}

// makeDir creates dir and its missing parents, and makes each new entry
// durable in its parent before anything is put inside.
func makeDir(fsys FS, dir string) error {
	var missing []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		_, err := fsys.Stat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("backend: stat %s: %w", p, err)
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("backend: create %s: %w", dir, err)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := fsys.SyncDir(filepath.Dir(missing[i])); err != nil {
			return fmt.Errorf("backend: create %s: sync parent: %w", dir, err)
		}
	}
	return nil
}

// inspect classifies dir without modifying it: a backend (its superblock is
// returned), or a directory to create one in (fresh). An empty directory,
// or one holding only what an interrupted creation leaves behind, is fresh.
func inspect(fsys FS, dir string) (sb *superblock, fresh bool, err error) {
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, false, fmt.Errorf("backend: list %s: %w", dir, err)
	}
	hasSB := false
	for _, e := range ents {
		if e.Name() == superblockName {
			hasSB = true
		}
	}
	if !hasSB {
		if !creationLeftovers(fsys, dir, ents) {
			return nil, false, fmt.Errorf("%w: %s is not empty and has no %s", ErrNotBackend, dir, superblockName)
		}
		return nil, true, nil
	}
	sb, err = readSuperblock(fsys, filepath.Join(dir, superblockName))
	if err != nil {
		return nil, false, err
	}
	for _, sub := range []string{segmentsDir, metaDir} {
		p := filepath.Join(dir, sub)
		st, err := fsys.Stat(p)
		if err != nil {
			return nil, false, &CorruptionError{Path: p, Offset: -1, Reason: "missing backend directory", Err: err}
		}
		if !st.IsDir() {
			return nil, false, corruptf(p, -1, "not a directory")
		}
	}
	return sb, false, nil
}

// creationLeftovers reports whether ents is what create leaves when it is
// interrupted before the superblock is renamed into place: at most the lock
// file, superblock.tmp and empty segments/ and meta/ directories.
func creationLeftovers(fsys FS, dir string, ents []iofs.DirEntry) bool {
	for _, e := range ents {
		switch name := e.Name(); {
		case (name == lockName || name == superblockTmp) && e.Type().IsRegular():
		case (name == segmentsDir || name == metaDir) && e.IsDir():
			sub, err := fsys.ReadDir(filepath.Join(dir, name))
			if err != nil || len(sub) != 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func readSuperblock(fsys FS, path string) (*superblock, error) {
	b, err := readWhole(fsys, path, 4*superblockLen)
	if err != nil {
		return nil, fmt.Errorf("backend: read superblock: %w", err)
	}
	return decodeSuperblock(path, b)
}

// readWhole reads a small file of at most max bytes (more is read as max+1
// bytes so the caller sees a wrong length).
func readWhole(fsys FS, path string, max int) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, max+1)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return b[:n], nil
}

// lockHolder returns the pid recorded in dir's lock file, for messages.
func lockHolder(fsys FS, dir string) string {
	b, err := readWhole(fsys, filepath.Join(dir, lockName), 32)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Sprintf("unknown (lock file holds %q)", b)
	}
	return strconv.Itoa(pid)
}

// create makes a fresh backend in dir, which holds the lock and nothing else
// of value. The superblock is renamed into place last: its presence marks a
// complete backend.
func create(fsys FS, dir string, segSize int64) (*superblock, error) {
	sb := &superblock{ctimeNanos: time.Now().UnixNano(), segmentSize: segSize}
	if _, err := rand.Read(sb.uuid[:]); err != nil {
		return nil, fmt.Errorf("backend: make uuid: %w", err)
	}
	sb.uuid[6] = sb.uuid[6]&0x0f | 0x40 // RFC 4122 version 4
	sb.uuid[8] = sb.uuid[8]&0x3f | 0x80
	for _, sub := range []string{segmentsDir, metaDir} {
		if err := fsys.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("backend: create %s: %w", sub, err)
		}
	}
	if err := fsys.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("backend: sync %s: %w", dir, err)
	}
	if err := writeSuperblock(fsys, dir, sb); err != nil {
		return nil, err
	}
	return sb, nil
}

// writeSuperblock replaces DIR/superblock atomically: write a temp file,
// fsync it, rename it over the old one, fsync DIR.
func writeSuperblock(fsys FS, dir string, sb *superblock) error {
	tmp := filepath.Join(dir, superblockTmp)
	if err := fsys.Remove(tmp); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("backend: remove stale %s: %w", tmp, err)
	}
	f, err := fsys.Create(tmp)
	if err != nil {
		return fmt.Errorf("backend: write superblock: %w", err)
	}
	_, err = f.WriteAt(sb.encode(), 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, filepath.Join(dir, superblockName))
	}
	if err != nil {
		fsys.Remove(tmp)
		return fmt.Errorf("backend: write superblock: %w", err)
	}
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("backend: write superblock: sync %s: %w", dir, err)
	}
	return nil
}

// scan learns the existing segments.
func (s *Store) scan() error {
	segs, err := s.space.list()
	if err != nil {
		return err
	}
	var highest uint64
	for num, size := range segs {
		s.vis.sizes[num] = size
		highest = max(highest, num)
	}
	s.nextSeg = highest + 1
	return nil
}

// removeTemps removes temp files left in a backend directory by an earlier
// process (they were never committed).
func (s *Store) removeTemps() error {
	if err := s.fsys.Remove(filepath.Join(s.dir, superblockTmp)); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("backend: remove stale %s: %w", superblockTmp, err)
	}
	mdir := filepath.Join(s.dir, metaDir)
	ments, err := s.fsys.ReadDir(mdir)
	if err != nil {
		return fmt.Errorf("backend: list meta: %w", err)
	}
	for _, e := range ments {
		if strings.HasSuffix(e.Name(), tmpExt) {
			if err := s.fsys.Remove(filepath.Join(mdir, e.Name())); err != nil {
				return fmt.Errorf("backend: remove uncommitted %s: %w", e.Name(), err)
			}
			s.log.WithField("name", e.Name()).Info("removed uncommitted meta file")
		}
	}
	return nil
}

// ID returns the filesystem uuid recorded at creation.
func (s *Store) ID() [16]byte { return s.uuid }

// SegmentSize returns the data capacity of a segment.
func (s *Store) SegmentSize() int64 { return s.segSz }

// StatFS reports the size and free space of the filesystem holding the
// backend; for a device, the space of its segment slots.
func (s *Store) StatFS() (total, free, avail uint64, err error) {
	st, err := s.space.statFS()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("backend: statfs: %w", err)
	}
	return st.Total, st.Free, st.Avail, nil
}

// SegmentInfo describes one segment.
type SegmentInfo struct {
	Number uint64
	Size   int64 // header and records, including records not yet written out
	Active bool  // still being appended to
}

// Segments lists the segments in ascending order.
func (s *Store) Segments() []SegmentInfo {
	s.vis.RLock()
	out := make([]SegmentInfo, 0, len(s.vis.sizes))
	for n, sz := range s.vis.sizes {
		out = append(out, SegmentInfo{Number: n, Size: sz, Active: n == s.vis.activeNo})
	}
	s.vis.RUnlock()
	slices.SortFunc(out, func(a, b SegmentInfo) int { return cmp.Compare(a.Number, b.Number) })
	return out
}

// RemoveSegment deletes segment n. The caller guarantees that no live
// address points into it. The segment being written, or one awaiting Sync,
// cannot be removed (ErrSegmentBusy).
func (s *Store) RemoveSegment(n uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if s.active != nil && s.active.num == n {
		return fmt.Errorf("%w: segment %d", ErrSegmentBusy, n)
	}
	for _, w := range s.sealed {
		if w.num == n {
			return fmt.Errorf("%w: segment %d awaits sync", ErrSegmentBusy, n)
		}
	}
	s.vis.RLock()
	_, ok := s.vis.sizes[n]
	s.vis.RUnlock()
	if !ok {
		return fmt.Errorf("backend: remove segment %d: %w", n, iofs.ErrNotExist)
	}
	if err := s.space.remove(n); err != nil {
		return fmt.Errorf("backend: remove segment %d: %w", n, err)
	}
	s.vis.Lock()
	delete(s.vis.sizes, n)
	delete(s.vis.voided, n)
	s.vis.Unlock()
	s.handles.forget(n)
	if err := s.space.syncNames(); err != nil {
		return fmt.Errorf("backend: remove segment %d: sync segments: %w", n, err)
	}
	s.log.WithField("segment", n).Debug("segment removed")
	return nil
}

// Close makes every append durable (as Sync), closes the files and releases
// the lock. The store is unusable afterwards, even when Close fails.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.syncLocked()
	s.closed.Store(true)
	// syncLocked leaves nothing sealed; on failure it closed everything.
	if s.active != nil {
		err = errors.Join(err, s.active.f.Close())
		s.active = nil
	}
	s.vis.Lock()
	s.vis.activeNo = 0
	s.vis.Unlock()
	s.handles.closeAll()
	err = errors.Join(err, s.lock.Close())
	if err != nil {
		s.log.WithError(err).Error("backend close")
		return err
	}
	s.log.Info("backend closed")
	return nil
}

// orDiscard returns log, or a logger that drops everything when log is nil.
func orDiscard(log *logrus.Entry) *logrus.Entry {
	if log != nil {
		return log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
