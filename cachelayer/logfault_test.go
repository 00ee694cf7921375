package cachelayer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dcache/dcache/backend"
	"github.com/dcache/dcache/internal/device"
	"github.com/dcache/dcache/logarea"
)

// logRig is an engine over a real backend directory and a real logarea log
// whose replicas are crashable memory devices behind fault injectors. A
// test turns a replica's fault switch on mid-run, then crashes the engine
// (no destage, no clean log close; the replicas keep what a power loss
// would) and starts it again on the replicas with the faults gone.
type logRig struct {
	t     testing.TB
	dir   string
	cfg   Config
	lcfg  logarea.Config
	fsys  backend.FS
	rng   *rand.Rand
	inner []*device.Crashable
	fault []*device.Switch // per replica: EIO on writes and syncs
	dead  []*device.Switch // per replica: every op fails (after a crash)
	be    *backend.Store
	l     *logarea.Log
	e     *Engine
}

func newLogRig(t testing.TB, cfg Config, lcfg logarea.Config, replicas int, size int64, fsys backend.FS) *logRig {
	t.Helper()
	if fsys == nil {
		fsys = backend.OSFS{}
	}
	r := &logRig{t: t, dir: t.TempDir() + "/backend", cfg: cfg, lcfg: lcfg, fsys: fsys, rng: rand.New(rand.NewPCG(uint64(replicas), uint64(size)))}
	for i := 0; i < replicas; i++ {
		r.inner = append(r.inner, device.NewCrashable(size).SetName(fmt.Sprintf("replica%d", i)))
	}
	r.openBackend()
	devs := r.devices()
	if err := logarea.Format(devs, r.be.ID()); err != nil {
		t.Fatalf("format log: %v", err)
	}
	r.openRest(devs)
	t.Cleanup(func() {
		if r.e != nil {
			r.crash()
		}
	})
	return r
}

func (r *logRig) openBackend() {
	r.t.Helper()
	be, _, err := backend.Open(r.fsys, r.dir, backend.Config{SegmentSize: 4 << 20}, testLog(r.t))
	if err != nil {
		r.t.Fatalf("open backend: %v", err)
	}
	r.be = be
}

// devices wraps the inner devices in fresh fault injectors, all off.
func (r *logRig) devices() []device.Device {
	r.fault, r.dead = nil, nil
	var devs []device.Device
	for _, c := range r.inner {
		f := device.NewSwitch(device.OpWrite|device.OpSync, syscall.EIO)
		d := device.Vanish()
		r.fault, r.dead = append(r.fault, f), append(r.dead, d)
		devs = append(devs, device.NewFaulty(c, f, d))
	}
	return devs
}

func (r *logRig) openRest(devs []device.Device) {
	r.t.Helper()
	l, err := logarea.Open(devs, r.be.ID(), r.lcfg, testLog(r.t))
	if err != nil {
		r.t.Fatalf("open log: %v", err)
	}
	e, err := Open(r.cfg, r.be, NewLogWAL(l), testLog(r.t))
	if err != nil {
		l.Close()
		r.t.Fatalf("open engine: %v", err)
	}
	r.l, r.e = l, e
}

// crash stops the engine without destaging, keeps of each replica what a
// power loss at this moment could leave, and lets the old log fail on
// devices that are gone.
func (r *logRig) crash() {
	r.t.Helper()
	haltAsCrash(r.e)
	for i, c := range r.inner {
		r.inner[i] = c.Crash(r.rng)
	}
	for _, d := range r.dead {
		d.Set(true)
	}
	r.l.Close() // fails: its devices vanished; it stops its goroutines
	if err := r.be.Close(); err != nil {
		r.t.Fatalf("close backend: %v", err)
	}
	r.e, r.l, r.be = nil, nil, nil
}

// restart brings the filesystem back on the crashed replicas, all healthy.
func (r *logRig) restart() {
	r.t.Helper()
	r.openBackend()
	r.openRest(r.devices())
}

// block is the 4 KiB written by writer w as its i-th write: it names both.
func block(w, i int) []byte {
	b := bytes.Repeat([]byte{byte(w*31 + i)}, BlockSize)
	binary.LittleEndian.PutUint32(b, uint32(w))
	binary.LittleEndian.PutUint32(b[4:], uint32(i))
	return b
}

// checkWriters verifies writer w's file: its first acked[w] blocks are
// there, and so is every other block the file holds (the recovered state is
// a prefix of the ops).
func checkWriters(t *testing.T, e *Engine, acked []int, when string) {
	t.Helper()
	for w, n := range acked {
		f, err := e.Lookup(RootIno, fmt.Sprintf("w%d", w))
		if err != nil {
			if n == 0 {
				continue
			}
			t.Fatalf("%s: writer %d acknowledged %d fsynced writes, its file: %v", when, w, n, err)
		}
		got := readAll(t, e, f.Ino)
		if len(got)%BlockSize != 0 || len(got)/BlockSize < n {
			t.Fatalf("%s: writer %d: file of %d bytes, %d fsynced blocks were acknowledged", when, w, len(got), n)
		}
		for i := 0; i < len(got)/BlockSize; i++ {
			if !bytes.Equal(got[i*BlockSize:(i+1)*BlockSize], block(w, i)) {
				t.Fatalf("%s: writer %d: block %d reads %x..., want %x...", when, w, i, got[i*BlockSize:i*BlockSize+8], block(w, i)[:8])
			}
		}
	}
}

// TestLogReplicaFailure fails log replicas in the middle of a run of
// concurrent write+fsync loops. While the write quorum holds, every op
// keeps succeeding; when it is lost, writes and fsyncs fail with ErrLog
// (EIO), reads keep being served, and after a crash and a restart on
// healthy devices every acknowledged fsync is there.
func TestLogReplicaFailure(t *testing.T) {
	tests := []struct {
		name     string
		replicas int
		quorum   logarea.Quorum
		failing  []int
		vanish   bool // the device vanishes rather than returning EIO
		lost     bool
	}{
		{name: "majority of 3, one EIO", replicas: 3, quorum: logarea.QuorumMajority, failing: []int{1}},
		{name: "majority of 3, one vanishes", replicas: 3, quorum: logarea.QuorumMajority, failing: []int{0}, vanish: true},
		{name: "majority of 3, two EIO", replicas: 3, quorum: logarea.QuorumMajority, failing: []int{0, 2}, lost: true},
		{name: "all of 2, one EIO", replicas: 2, quorum: logarea.QuorumAll, failing: []int{1}, lost: true},
		{name: "majority of 2, one EIO", replicas: 2, quorum: logarea.QuorumMajority, failing: []int{0}, lost: true},
		{name: "all of 2, both EIO", replicas: 2, quorum: logarea.QuorumAll, failing: []int{0, 1}, lost: true},
		{name: "single replica EIO", replicas: 1, quorum: logarea.QuorumAll, failing: []int{0}, lost: true},
		{name: "one of 2, one EIO", replicas: 2, quorum: logarea.QuorumOne, failing: []int{1}},
		{name: "one of 2, one vanishes", replicas: 2, quorum: logarea.QuorumOne, failing: []int{0}, vanish: true},
		{name: "one of 2, both EIO", replicas: 2, quorum: logarea.QuorumOne, failing: []int{0, 1}, lost: true},
	}
	const writers = 4
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newLogRig(t, Config{CacheSize: 16 << 20}, logarea.Config{WriteQuorum: tc.quorum}, tc.replicas, 8<<20, nil)
			e := r.e
			for w := 0; w < writers; w++ {
				mustCreate(t, e, RootIno, fmt.Sprintf("w%d", w), syscall.S_IFREG|0o644)
			}
			if err := e.Sync(bg); err != nil {
				t.Fatal(err)
			}

			// Each writer appends blocks, fsyncing after each, until stop
			// (or its first error). The replicas fail once 40 fsyncs
			// were acknowledged, while the writers run.
			var total atomic.Int64
			flip, enough := make(chan struct{}), make(chan struct{})
			stop := make(chan struct{})
			acked := make([]int, writers)
			errs := make([]error, writers)
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f, err := e.Lookup(RootIno, fmt.Sprintf("w%d", w))
					if err != nil {
						errs[w] = err
						return
					}
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := e.Write(bg, f.Ino, uint64(i)*BlockSize, block(w, i), WriteOpts{}); err != nil {
							errs[w] = err
							return
						}
						if err := e.Sync(bg); err != nil {
							errs[w] = err
							return
						}
						acked[w] = i + 1
						switch total.Add(1) {
						case 40:
							close(flip)
						case 160:
							close(enough)
						}
					}
				}()
			}
			<-flip
			for _, i := range tc.failing {
				if tc.vanish {
					r.dead[i].Set(true)
				} else {
					r.fault[i].Set(true)
				}
			}
			if !tc.lost {
				// The writers keep going: stop them after 120 more.
				<-enough
				close(stop)
			} // else every writer stops at its first error
			wg.Wait()

			// Ops from here certainly come after the failure.
			st := r.l.Stats()
			if tc.lost {
				for w, err := range errs {
					if !errors.Is(err, ErrLog) {
						t.Errorf("writer %d: %v, want an ErrLog error", w, err)
					}
					if !tc.vanish && !errors.Is(err, syscall.EIO) {
						t.Errorf("writer %d: %v does not carry EIO", w, err)
					}
				}
				if _, err := e.Create(bg, RootIno, "after", NewObject{Mode: syscall.S_IFREG | 0o644}, root()); !errors.Is(err, ErrLog) {
					t.Errorf("create after the quorum was lost: %v, want ErrLog", err)
				}
				w0, err := e.Lookup(RootIno, "w0")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.Write(bg, w0.Ino, 1<<20, block(9, 9), WriteOpts{}); !errors.Is(err, ErrLog) {
					t.Errorf("write after the quorum was lost: %v, want ErrLog", err)
				}
				if err := e.Sync(bg); err != nil && !errors.Is(err, ErrLog) {
					t.Errorf("fsync after the quorum was lost: %v, want nil or ErrLog", err)
				}
				if st.Error == "" || st.Healthy >= st.Need {
					t.Errorf("log stats after quorum loss: healthy %d need %d error %q", st.Healthy, st.Need, st.Error)
				}
				// The filesystem still serves what it holds.
				checkWriters(t, e, acked, "after the failure, live")
			} else {
				for w, err := range errs {
					if err != nil {
						t.Errorf("writer %d failed with the quorum held: %v", w, err)
					}
				}
				f := mustCreate(t, e, RootIno, "after", syscall.S_IFREG|0o644)
				mustWrite(t, e, f.Ino, 0, block(7, 0))
				if err := e.Sync(bg); err != nil {
					t.Fatalf("fsync with the quorum held: %v", err)
				}
				st = r.l.Stats()
				for _, i := range tc.failing {
					if h := st.Replicas[i].Health; h != logarea.HealthFailed {
						t.Errorf("replica %d is %v after its failure", i, h)
					}
				}
				if st.Error != "" || st.Healthy != tc.replicas-len(tc.failing) {
					t.Errorf("log stats: healthy %d, error %q", st.Healthy, st.Error)
				}
			}

			r.crash()
			r.restart()
			checkWriters(t, r.e, acked, "after the restart")
			if !tc.lost {
				g, err := r.e.Lookup(RootIno, "after")
				if err != nil {
					t.Fatalf("after the restart: %v", err)
				}
				if got := readAll(t, r.e, g.Ino); !bytes.Equal(got, block(7, 0)) {
					t.Fatalf("after the restart the last fsynced file reads %x...", got[:8])
				}
			}
			// The restarted filesystem writes again.
			mustWrite(t, r.e, mustCreate(t, r.e, RootIno, "again", syscall.S_IFREG|0o644).Ino, 0, block(8, 0))
			if err := r.e.Sync(bg); err != nil {
				t.Fatalf("fsync after the restart: %v", err)
			}
		})
	}
}

// gateFS is the operating system's filesystem with a gate in front of every
// file write of the backend: while the gate is shut, writes wait (a backend
// that hangs, e.g. an NFS server that went away); delay slows every write.
type gateFS struct {
	backend.OSFS
	delay   time.Duration
	mu      sync.Mutex
	open    chan struct{} // closed while the gate is open
	waiting atomic.Int32  // writes waiting at the gate
}

func newGateFS(delay time.Duration) *gateFS {
	g := &gateFS{delay: delay, open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gateFS) shut() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gateFS) release() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

func (g *gateFS) pass() {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	g.waiting.Add(1)
	<-ch
	g.waiting.Add(-1)
	if g.delay > 0 {
		time.Sleep(g.delay)
	}
}

func (g *gateFS) Create(name string) (backend.File, error) {
	f, err := g.OSFS.Create(name)
	if err != nil {
		return nil, err
	}
	return gateFile{f, g}, nil
}

func (g *gateFS) OpenFile(name string, flag int, perm os.FileMode) (backend.File, error) {
	f, err := g.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return gateFile{f, g}, nil
}

type gateFile struct {
	backend.File
	g *gateFS
}

func (f gateFile) WriteAt(p []byte, off int64) (int, error) {
	f.g.pass()
	return f.File.WriteAt(p, off)
}

// TestFullLogWaitsForDestage writes four times the log's size with a dirty
// budget far above it, so that the log fills long before the cache does.
// While the backend hangs, the writer waits for room (no error, nothing
// acknowledged past what the log holds); once the backend moves, destage
// trims the log and the writer finishes. With a slow backend it just
// waits its turn. Every fsynced byte survives a crash.
func TestFullLogWaitsForDestage(t *testing.T) {
	tests := []struct {
		name    string
		delay   time.Duration
		blocked bool
	}{
		{name: "backend blocked", blocked: true},
		{name: "backend slow", delay: 2 * time.Millisecond},
	}
	const (
		logSize = 2 << 20
		total   = 4 * logSize
		chunk   = 64 << 10
	)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGateFS(tc.delay)
			cfg := Config{CacheSize: 64 << 20, DirtyBytes: 64 << 20, HighWatermark: 0.99, LowWatermark: 0.5, MaxDirtyAge: time.Hour}
			r := newLogRig(t, cfg, logarea.Config{}, 1, logSize, g)
			e := r.e
			f := mustCreate(t, e, RootIno, "big", syscall.S_IFREG|0o644)
			if err := e.Sync(bg); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, total)
			for i := range want {
				want[i] = byte(i/chunk*7 + i%251)
			}
			if tc.blocked {
				g.shut()
			}
			var acked atomic.Int64 // bytes written and fsynced
			done := make(chan error, 1)
			go func() {
				for off := 0; off < total; off += chunk {
					if _, err := e.Write(bg, f.Ino, uint64(off), want[off:off+chunk], WriteOpts{}); err != nil {
						done <- fmt.Errorf("write at %d: %w", off, err)
						return
					}
					if off%(4*chunk) == 0 {
						if err := e.Sync(bg); err != nil {
							done <- fmt.Errorf("fsync at %d: %w", off, err)
							return
						}
						acked.Store(int64(off + chunk))
					}
				}
				done <- e.Sync(bg)
			}()
			if tc.blocked {
				// Wait until destage hangs on the backend and the log
				// has no room for the next write.
				for {
					st := r.l.Stats()
					if g.waiting.Load() > 0 && st.FreeBytes < chunk+4096 {
						break
					}
					select {
					case err := <-done:
						t.Fatalf("the writer finished with the backend blocked: %v", err)
					case <-time.After(time.Millisecond):
					}
				}
				select {
				case err := <-done:
					t.Fatalf("the writer finished with the backend blocked and the log full: %v", err)
				default:
				}
				if n := acked.Load(); n >= total || n > logSize {
					t.Fatalf("%d bytes acknowledged with the backend blocked and a %d-byte log", n, logSize)
				}
				g.release()
			}
			if err := <-done; err != nil {
				t.Fatalf("writer with a full log: %v", err)
			}
			st := r.l.Stats()
			if st.TailLSN <= 1 || st.PayloadBytes < total {
				t.Fatalf("the log was not reused: tail lsn %d, %d payload bytes through a %d-byte log", st.TailLSN, st.PayloadBytes, logSize)
			}
			if got := readAll(t, e, f.Ino); !bytes.Equal(got, want) {
				t.Fatalf("the file differs from what was written%s", diffRanges(got, want))
			}
			r.crash()
			r.restart()
			g2, err := r.e.Lookup(RootIno, "big")
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, r.e, g2.Ino); !bytes.Equal(got, want) {
				t.Fatalf("after a crash the file differs%s", diffRanges(got, want))
			}
		})
	}
}
