package cachelayer

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/backend"
)

// memWAL is an in-memory write-ahead log for engine tests. It keeps every
// committed record, knows which are synced, and can lose the unsynced ones
// as a crash would.
type memWAL struct {
	mu      sync.Mutex
	recs    []memRec // committed, LSN order, after the trim point
	last    uint64
	synced  uint64
	trimmed uint64
	syncs   int
	failing error // when set, Commit and Sync fail
}

type memRec struct {
	lsn uint64
	rec LogRecord
}

type memEntry struct {
	rec  LogRecord
	room int // ReserveSpace's bound on the payload
}

func (w *memWAL) Reserve(ctx context.Context, rec LogRecord) (WALEntry, error) {
	rec.Payload = append([]byte(nil), rec.Payload...)
	return &memEntry{rec: rec}, nil
}

func (w *memWAL) ReserveSpace(ctx context.Context, maxPayload int) (WALEntry, error) {
	return &memEntry{room: maxPayload}, nil
}

func (w *memWAL) Commit(e WALEntry, rec *LogRecord) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failing != nil {
		return 0, w.failing
	}
	r := e.(*memEntry).rec
	if rec != nil {
		// As the real log: a record must fit the room reserved for it.
		if room := e.(*memEntry).room; len(rec.Payload) > room {
			return 0, fmt.Errorf("memWAL: %d-byte payload in the room of %d bytes", len(rec.Payload), room)
		}
		r = *rec
		r.Payload = append([]byte(nil), rec.Payload...)
	}
	w.last++
	w.recs = append(w.recs, memRec{lsn: w.last, rec: r})
	return w.last, nil
}

func (w *memWAL) Cancel(e WALEntry) {}

func (w *memWAL) Sync(ctx context.Context, lsn uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failing != nil {
		return w.failing
	}
	if lsn > w.last {
		return fmt.Errorf("memWAL: sync to %d beyond last %d", lsn, w.last)
	}
	if lsn > w.synced {
		w.synced = lsn
		w.syncs++
	}
	return nil
}

func (w *memWAL) Trim(lsn uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if lsn > w.synced {
		return fmt.Errorf("memWAL: trim to %d beyond synced %d", lsn, w.synced)
	}
	i := 0
	for i < len(w.recs) && w.recs[i].lsn <= lsn {
		i++
	}
	w.recs = w.recs[i:]
	if lsn > w.trimmed {
		w.trimmed = lsn
	}
	return nil
}

func (w *memWAL) LastLSN() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *memWAL) Replay(after uint64, fn func(uint64, LogRecord) error) (uint64, error) {
	w.mu.Lock()
	recs := append([]memRec(nil), w.recs...)
	w.mu.Unlock()
	last := after
	for _, r := range recs {
		if r.lsn <= after {
			continue
		}
		if err := fn(r.lsn, r.rec); err != nil {
			return last, err
		}
		last = r.lsn
	}
	return last, nil
}

func (w *memWAL) Usage() (int64, int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, r := range w.recs {
		n += int64(len(r.rec.Payload)) + 64
	}
	return n, 1 << 40
}

// crash drops every unsynced record, as a power loss would.
func (w *memWAL) crash() {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := len(w.recs)
	for i > 0 && w.recs[i-1].lsn > w.synced {
		i--
	}
	w.recs = w.recs[:i]
	w.last = w.synced
}

func (w *memWAL) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.recs)
}

func testLog(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(testWriter{t})
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// rig is an engine on a real backend directory and a memWAL, with helpers
// to stop it cleanly or as a crash would, and start it again.
type rig struct {
	t       testing.TB
	dir     string
	cfg     Config
	segSize int64  // backend segment size; 0: 4 MiB
	device  string // when set, the backend is this device file, not dir
	wal     *memWAL
	fs      backend.FS // the backend's filesystem (nil: the OS's)
	be      *backend.Store
	e       *Engine
}

func newRig(t testing.TB, cfg Config) *rig { return newRigSeg(t, cfg, 0) }

// newRigSeg is newRig with backend segments of segSize bytes.
func newRigSeg(t testing.TB, cfg Config, segSize int64) *rig {
	return newRigOn(t, cfg, segSize, nil)
}

// newRigFS is newRig with the backend on fsys.
func newRigFS(t testing.TB, cfg Config, fsys backend.FS) *rig { return newRigOn(t, cfg, 0, fsys) }

func newRigOn(t testing.TB, cfg Config, segSize int64, fsys backend.FS) *rig {
	r := &rig{t: t, dir: t.TempDir() + "/backend", cfg: cfg, wal: &memWAL{}, segSize: segSize, fs: fsys}
	r.start()
	t.Cleanup(func() {
		if r.e != nil {
			r.stop()
		}
	})
	return r
}

func (r *rig) start() {
	r.t.Helper()
	segSize := r.segSize
	if segSize == 0 {
		segSize = 4 << 20
	}
	fsys := r.fs
	if fsys == nil {
		fsys = backend.OSFS{}
	}
	var be *backend.Store
	var err error
	if r.device != "" {
		var d *backend.DeviceFile
		if d, err = backend.OpenDeviceFile(r.device); err == nil {
			if be, _, err = backend.OpenDevice(r.device, d, d, backend.Config{SegmentSize: segSize}, backend.DeviceOptions{}, testLog(r.t)); err != nil {
				d.Close()
			}
		}
	} else {
		be, _, err = backend.Open(fsys, r.dir, backend.Config{SegmentSize: segSize}, testLog(r.t))
	}
	if err != nil {
		r.t.Fatalf("open backend: %v", err)
	}
	e, err := Open(r.cfg, be, r.wal, testLog(r.t))
	if err != nil {
		be.Close()
		r.t.Fatalf("open engine: %v", err)
	}
	r.be, r.e = be, e
}

// stop closes cleanly: everything destaged, log empty.
func (r *rig) stop() {
	r.t.Helper()
	if err := r.e.Close(); err != nil {
		r.t.Fatalf("close engine: %v", err)
	}
	if err := r.be.Close(); err != nil {
		r.t.Fatalf("close backend: %v", err)
	}
	r.e, r.be = nil, nil
}

// haltAsCrash stops e's goroutines and shuts it as a crash would: nothing
// destaged, nothing persisted, no round left in flight.
func haltAsCrash(e *Engine) {
	close(e.stop)
	e.done.Wait()
	e.destageMu.Lock() // no round in flight
	e.mu.Lock()
	e.closed = true
	e.pool.close()
	e.mu.Unlock()
	e.destageMu.Unlock()
}

// crash stops the engine without destaging and loses the unsynced log. It
// returns the last synced LSN: the state that must come back.
func (r *rig) crash() uint64 {
	r.t.Helper()
	haltAsCrash(r.e)
	synced := r.wal.synced
	r.wal.crash()
	if err := r.be.Close(); err != nil {
		r.t.Fatalf("close backend: %v", err)
	}
	r.e, r.be = nil, nil
	return synced
}

func (r *rig) restart() { r.stop(); r.start() }

var bg = context.Background()

func root() Caller { return Caller{} }
