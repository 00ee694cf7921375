package cachelayer

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// waitFor polls cond until it holds; it fails the test after a generous
// deadline (a hang, not a speed check).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pattern is distinct content for (file, offset).
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(int64(seed))).Read(b)
	return b
}

// dirtyBlocks lists which of blocks [0, n) of ino are cached dirty.
func dirtyBlocks(e *Engine, ino Ino, n uint64) []bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]bool, n)
	for b := range n {
		r, ok := e.pages.Get(pageRef{Ino: ino, Blk: b})
		out[b] = ok && r.Dirty
	}
	return out
}

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mode
		ok   bool
	}{
		{"write-back", ModeWriteBack, true},
		{"write-through", ModeWriteThrough, true},
		{"write-around", ModeWriteAround, true},
		{"writeback", 0, false},
		{"", 0, false},
	} {
		got, err := ParseMode(tc.in)
		if tc.ok != (err == nil) || (tc.ok && got != tc.want) {
			t.Errorf("ParseMode(%q) = %v, %v", tc.in, got, err)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
		if !tc.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseMode(%q): %v is not ErrInvalid", tc.in, err)
		}
	}
	r := newRig(t, Config{CacheSize: 1 << 20})
	if err := r.e.SetMode(bg, Mode(7), false); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetMode(7) = %v, want ErrInvalid", err)
	}
	if m := r.e.Mode(); m != ModeWriteBack {
		t.Errorf("mode after a refused switch: %v", m)
	}
}

// Destage starts when dirty data reaches the high watermark, not before,
// and a round stops at the low watermark, taking the oldest pages.
func TestDestageWatermarks(t *testing.T) {
	// A 64-page budget: high 0.5 = 32 pages, low 0.3 = 19 pages.
	r := newRig(t, Config{CacheSize: 1 << 20, DirtyBytes: 64 * BlockSize, HighWatermark: 0.5, LowWatermark: 0.3, MaxDirtyAge: time.Hour})
	e := r.e
	f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
	for i := range 31 {
		mustWrite(t, e, f.Ino, uint64(i)*BlockSize, pattern(i, BlockSize))
	}
	if scope, ok := e.destageNeeded(); ok {
		t.Fatalf("31 of 64 pages dirty, high watermark 32: destage wanted (%v)", scope)
	}
	if d := e.Info().DirtyBytes; d != 31*BlockSize {
		t.Fatalf("dirty bytes %d below the high watermark, want all 31 pages", d)
	}
	rounds := e.Stats().DestageRounds.Load()
	mustWrite(t, e, f.Ino, 31*BlockSize, pattern(31, BlockSize))
	waitFor(t, "a destage round", func() bool { return e.Stats().DestageRounds.Load() > rounds })
	if d := e.Info().DirtyBytes; d != 19*BlockSize {
		t.Fatalf("after the round %d bytes are dirty, want the low watermark, 19 pages", d/BlockSize)
	}
	dirty := dirtyBlocks(e, f.Ino, 32)
	for b, d := range dirty {
		if want := b >= 13; d != want {
			t.Errorf("block %d dirty=%v: the 13 oldest pages should be destaged, the newest 19 kept", b, d)
		}
	}
	if scope, ok := e.destageNeeded(); ok {
		t.Fatalf("at the low watermark destage is still wanted (%v)", scope)
	}
	var want []byte
	for i := range 32 {
		want = append(want, pattern(i, BlockSize)...)
	}
	if got := readAll(t, e, f.Ino); !bytes.Equal(got, want) {
		t.Fatal("the file reads back wrong after a partial round")
	}
}

// A drain from the high to the low watermark larger than one round's bound
// takes several rounds and still stops exactly at the low watermark.
func TestDestageDrainsInBoundedRounds(t *testing.T) {
	// 4096 pages: high 0.9 = 3687 pages, low 0.1 = 409, a round at most
	// 1024 pages: four rounds.
	r := newRig(t, Config{CacheSize: 32 << 20, DirtyBytes: 16 << 20, HighWatermark: 0.9, LowWatermark: 0.1, MaxDirtyAge: time.Hour})
	e := r.e
	if got := e.roundPages(); got != 1024 {
		t.Fatalf("round bound %d pages, want 1024", got)
	}
	f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
	rounds := e.Stats().DestageRounds.Load()
	data := pattern(1, 3687*BlockSize)
	for off := 0; off < len(data); off += 1 << 20 {
		mustWrite(t, e, f.Ino, uint64(off), data[off:min(len(data), off+1<<20)])
	}
	waitFor(t, "the drain to the low watermark", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.pool.nDirty <= 409 && !e.draining
	})
	if d := e.Info().DirtyBytes / BlockSize; d != 409 {
		t.Errorf("%d pages dirty after the drain, want the low watermark, 409", d)
	}
	if n := e.Stats().DestageRounds.Load() - rounds; n < 4 {
		t.Errorf("the drain took %d rounds, want at least 4 of at most 1024 pages", n)
	}
	if got := readAll(t, e, f.Ino); !bytes.Equal(got, data) {
		t.Fatal("reads back wrong after the drain")
	}
}

// No dirty byte gets older than MaxDirtyAge, far below the watermarks.
func TestMaxDirtyAge(t *testing.T) {
	t.Run("decision", func(t *testing.T) {
		r := newRig(t, Config{CacheSize: 1 << 20, DirtyBytes: 64 * BlockSize, MaxDirtyAge: time.Hour})
		e := r.e
		f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
		mustWrite(t, e, f.Ino, 0, pattern(1, BlockSize))
		mustWrite(t, e, f.Ino, 5*BlockSize, pattern(2, BlockSize))
		if scope, ok := e.destageNeeded(); ok {
			t.Fatalf("young pages: destage wanted (%v)", scope)
		}
		// Age the oldest page past the limit.
		e.mu.Lock()
		e.pool.meta[e.pageOfLocked(f.Ino, 0)].dirtyAt = time.Now().Add(-2 * time.Hour).UnixNano()
		e.mu.Unlock()
		if scope, ok := e.destageNeeded(); !ok || scope != destageAll {
			t.Fatalf("a page older than max_dirty_age: destage %v %v, want all", scope, ok)
		}
	})
	t.Run("flusher", func(t *testing.T) {
		r := newRig(t, Config{CacheSize: 1 << 20, DirtyBytes: 64 * BlockSize, MaxDirtyAge: 200 * time.Millisecond})
		e := r.e
		f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
		// Keep writing, one page well below the watermarks at a time:
		// every page still gets destaged.
		for i := range 5 {
			mustWrite(t, e, f.Ino, uint64(i)*BlockSize, pattern(i, BlockSize))
			time.Sleep(50 * time.Millisecond)
		}
		waitFor(t, "every page destaged by age", func() bool { return e.Info().DirtyBytes == 0 })
		if e.Info().OldestDirtyAt != (time.Time{}) {
			t.Fatal("nothing dirty, but an oldest dirty time")
		}
	})
}

func TestThrottleDelay(t *testing.T) {
	e := &Engine{cfg: Config{ThrottleWatermark: 0.9}}
	e.destageRate.Store(4 << 20) // 4 MiB/s: 256 pages take 250 ms
	full := 256 * BlockSize * time.Second / (4 << 20)
	for _, tc := range []struct {
		fill float64
		want time.Duration
	}{
		{0.5, 0},
		{0.9, 0},
		{0.95, full / 2},
		{1, full},
		{1.5, full},
	} {
		got := e.throttleDelayLocked(tc.fill, 256)
		if tc.want > maxThrottleDelay {
			tc.want = maxThrottleDelay
		}
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("fill %v: delay %v, want %v", tc.fill, got, tc.want)
		}
	}
	// Small writes get short delays: proportional to the write's size.
	if got := e.throttleDelayLocked(0.95, 1); got <= 0 || got > time.Millisecond {
		t.Errorf("one page at fill 0.95: delay %v", got)
	}
	var prev time.Duration
	for f := 0.9; f <= 1.0; f += 0.01 {
		d := e.throttleDelayLocked(f, 16)
		if d < prev {
			t.Fatalf("delay falls from %v to %v at fill %v", prev, d, f)
		}
		prev = d
	}
}

// Writers far beyond the dirty budget, on a slow backend, are delayed and
// wait for room, but no write fails and nothing is lost.
func TestThrottleDelaysButDoesNotFail(t *testing.T) {
	ffs := &faultFS{}
	ffs.setDelay(5 * time.Millisecond)
	r := newRigFS(t, Config{CacheSize: 2 << 20, DirtyBytes: 32 * BlockSize, MaxDirtyAge: time.Hour}, ffs)
	e := r.e
	const writers, pages = 4, 64 // 8× the budget
	inos := make([]Ino, writers)
	for w := range writers {
		in := mustCreate(t, e, RootIno, fmt.Sprintf("f%d", w), syscall.S_IFREG|0o644)
		inos[w] = in.Ino
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range pages {
				if n, err := e.Write(bg, inos[w], uint64(p)*BlockSize, pattern(w*1000+p, BlockSize), WriteOpts{}); err != nil || n != BlockSize {
					errs <- fmt.Errorf("writer %d page %d: n=%d err=%v", w, p, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := e.Stats()
	if st.ThrottleWaits.Load() == 0 || st.ThrottleWaitNs.Load() == 0 {
		t.Errorf("writers 8× over the budget were never throttled (waits %d, %d ns)", st.ThrottleWaits.Load(), st.ThrottleWaitNs.Load())
	}
	for w := range writers {
		var want []byte
		for p := range pages {
			want = append(want, pattern(w*1000+p, BlockSize)...)
		}
		if got := readAll(t, e, inos[w]); !bytes.Equal(got, want) {
			t.Errorf("file %d reads back wrong", w)
		}
	}
}

// A write-through or write-around write returns once the backend holds it:
// losing the whole log afterwards loses nothing. A write-back write needs
// the log (the control case).
func TestWriteThroughHoldsInBackend(t *testing.T) {
	for _, tc := range []struct {
		mode    Mode
		survive bool
		cached  bool // the cache keeps a (clean) copy
	}{
		{ModeWriteBack, false, true},
		{ModeWriteThrough, true, true},
		{ModeWriteAround, true, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			r := newRig(t, Config{CacheSize: 1 << 20, Mode: tc.mode, MaxDirtyAge: time.Hour})
			e := r.e
			f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
			if err := e.SetMode(bg, ModeWriteBack, true); err != nil { // the create, persisted
				t.Fatal(err)
			}
			if err := e.SetMode(bg, tc.mode, false); err != nil {
				t.Fatal(err)
			}
			data := pattern(7, 10*BlockSize+123)
			mustWrite(t, e, f.Ino, 0, data)
			dirty, cached := 0, 0
			e.mu.Lock()
			e.pages.Ascend(pageRef{Ino: f.Ino}, func(r pageRef) bool {
				if r.Ino != f.Ino {
					return false
				}
				cached++
				if r.Dirty {
					dirty++
				}
				return true
			})
			e.mu.Unlock()
			if tc.mode != ModeWriteBack && dirty != 0 {
				t.Errorf("%d pages dirty after a %v write returned", dirty, tc.mode)
			}
			if (cached > 0) != tc.cached {
				t.Errorf("%d pages cached after a %v write", cached, tc.mode)
			}
			if got := readAll(t, e, f.Ino); !bytes.Equal(got, data) {
				t.Fatal("reads back wrong before the crash")
			}
			// Crash and lose every log record, synced or not.
			r.crash()
			last := r.wal.last
			r.wal = &memWAL{last: last, synced: last, trimmed: last}
			r.start()
			in, err := r.e.GetAttr(f.Ino)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, r.e, f.Ino)
			if survived := in.Size == uint64(len(data)) && bytes.Equal(got, data); survived != tc.survive {
				t.Fatalf("without the log the write survived=%v (size %d), want %v", survived, in.Size, tc.survive)
			}
		})
	}
}

// Modes switched back and forth under concurrent writers: every write
// reads back, a flushed switch leaves nothing dirty, and a crash after a
// sync loses nothing.
func TestModeSwitchUnderLoad(t *testing.T) {
	r := newRig(t, Config{CacheSize: 4 << 20, DirtyBytes: 128 * BlockSize, MaxDirtyAge: time.Hour})
	e := r.e
	const writers, writes, size = 4, 60, 3 * BlockSize / 2 // unaligned: read-modify-write too
	inos := make([]Ino, writers)
	for w := range writers {
		inos[w] = mustCreate(t, e, RootIno, fmt.Sprintf("f%d", w), syscall.S_IFREG|0o644).Ino
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	done := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				if _, err := e.Write(bg, inos[w], uint64(i*size), pattern(w*1000+i, size), WriteOpts{}); err != nil {
					errs <- fmt.Errorf("writer %d write %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	modes := []struct {
		m     Mode
		flush bool
	}{{ModeWriteThrough, false}, {ModeWriteAround, false}, {ModeWriteBack, false}, {ModeWriteThrough, true}, {ModeWriteBack, false}, {ModeWriteAround, true}}
	switches := 0
loop:
	for i := 0; ; i++ {
		select {
		case <-done:
			break loop
		default:
		}
		s := modes[i%len(modes)]
		if err := e.SetMode(bg, s.m, s.flush); err != nil {
			t.Fatal(err)
		}
		switches++
		time.Sleep(2 * time.Millisecond)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if switches < 2 {
		t.Logf("only %d mode switches during the load", switches)
	}
	if got := e.Stats().ThroughWrites.Load(); got == 0 && switches >= 2 {
		t.Error("no write went through the backend")
	}
	check := func(e *Engine, when string) {
		t.Helper()
		for w := range writers {
			var want []byte
			for i := range writes {
				want = append(want, pattern(w*1000+i, size)...)
			}
			if got := readAll(t, e, inos[w]); !bytes.Equal(got, want) {
				t.Fatalf("%s: file %d reads back wrong: %s", when, w, diffRanges(got, want))
			}
		}
	}
	check(e, "after the load")
	if err := e.SetMode(bg, ModeWriteThrough, true); err != nil {
		t.Fatal(err)
	}
	if d := e.Info().DirtyBytes; d != 0 {
		t.Errorf("a flushed switch to write-through left %d bytes dirty", d)
	}
	if err := e.SetMode(bg, ModeWriteBack, false); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, e, inos[0], 0, pattern(0, size)) // the same bytes, written back
	if err := e.Sync(bg); err != nil {
		t.Fatal(err)
	}
	r.crash()
	r.start()
	check(r.e, "after a crash")
}

// The backend fails (EIO, ENOSPC) for a while: data stays dirty and in the
// log, the failure is counted and logged once, writers wait as the budget
// fills (write-through writers wait for the backend), and after recovery
// everything reaches the backend.
func TestBackendFailureThenRecovery(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
		for _, mode := range []Mode{ModeWriteBack, ModeWriteThrough} {
			t.Run(fmt.Sprintf("%v/%v", errno, mode), func(t *testing.T) {
				ffs := &faultFS{}
				r := newRigFS(t, Config{CacheSize: 2 << 20, DirtyBytes: 32 * BlockSize, MaxDirtyAge: time.Hour, Mode: mode}, ffs)
				e := r.e
				hook := logtest.NewLocal(e.log.Logger)
				f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
				ffs.set(errno)
				const pages = 64 // 2× the budget
				done := make(chan error, 1)
				go func() {
					for p := range pages {
						if _, err := e.Write(bg, f.Ino, uint64(p)*BlockSize, pattern(p, BlockSize), WriteOpts{}); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}()
				waitFor(t, "repeated destage failures", func() bool { return e.Stats().DestageErrors.Load() >= 4 })
				select {
				case err := <-done:
					t.Fatalf("the writer finished (%v) while the backend fails: 2× the budget cannot fit", err)
				default:
				}
				info := e.Info()
				if info.LastError == nil || !errors.Is(info.LastError, errno) {
					t.Errorf("last error %v, want %v", info.LastError, errno)
				}
				if info.DirtyBytes == 0 {
					t.Error("nothing dirty while the backend fails")
				}
				if r.wal.pending() == 0 {
					t.Error("the log was trimmed while the backend fails")
				}
				errorsLogged := 0
				for _, en := range hook.AllEntries() {
					if en.Level == logrus.ErrorLevel {
						errorsLogged++
					}
				}
				if errorsLogged != 1 {
					t.Errorf("%d errors logged for one episode of %d failures, want 1", errorsLogged, e.Stats().DestageErrors.Load())
				}
				ffs.set(nil)
				if err := <-done; err != nil {
					t.Fatalf("a write failed: %v", err)
				}
				if ffs.failures() == 0 {
					t.Fatal("no failure injected")
				}
				var want []byte
				for p := range pages {
					want = append(want, pattern(p, BlockSize)...)
				}
				if got := readAll(t, e, f.Ino); !bytes.Equal(got, want) {
					t.Fatal("reads back wrong after recovery")
				}
				if err := e.Flush(bg); err != nil {
					t.Fatalf("flush after recovery: %v", err)
				}
				if err := e.Info().LastError; err != nil {
					t.Errorf("after a successful flush the last error is still %v", err)
				}
				r.restart()
				if got := readAll(t, r.e, f.Ino); !bytes.Equal(got, want) {
					t.Fatal("reads back wrong after a restart")
				}
			})
		}
	}
}

// A sequential stream past the cutoff is destaged without waiting for the
// watermarks and its clean pages are evicted first; the stream's head and
// random writes stay dirty.
func TestSequentialCutoff(t *testing.T) {
	for _, cutoff := range []int64{0, 64 << 10} {
		t.Run(fmt.Sprint(cutoff), func(t *testing.T) {
			r := newRig(t, Config{CacheSize: 4 << 20, DirtyBytes: 512 * BlockSize, HighWatermark: 0.9, MaxDirtyAge: time.Hour, SequentialCutoff: cutoff})
			e := r.e
			f := mustCreate(t, e, RootIno, "seq", syscall.S_IFREG|0o644)
			g := mustCreate(t, e, RootIno, "rand", syscall.S_IFREG|0o644)
			const chunk, chunks = 16 << 10, 16 // 256 KiB
			for i := range chunks {
				mustWrite(t, e, f.Ino, uint64(i*chunk), pattern(i, chunk))
			}
			for i, off := range []uint64{40, 3, 77, 12, 150, 90, 60, 20} {
				mustWrite(t, e, g.Ino, off*chunk, pattern(100+i, chunk))
			}
			head := uint64(cutoff / BlockSize)
			if cutoff == 0 {
				if s := e.Stats().StreamBytes.Load(); s != 0 {
					t.Fatalf("cutoff 0 routed %d bytes as a stream", s)
				}
				if scope, ok := e.destageNeeded(); ok {
					t.Fatalf("cutoff 0, below the watermarks: destage %v", scope)
				}
				return
			}
			if s, want := e.Stats().StreamBytes.Load(), int64(chunks*chunk)-cutoff; s != want {
				t.Fatalf("%d bytes routed as a stream, want %d", s, want)
			}
			waitFor(t, "the stream destaged", func() bool {
				e.mu.Lock()
				defer e.mu.Unlock()
				return e.streamDirty == 0
			})
			for b, d := range dirtyBlocks(e, f.Ino, chunks*chunk/BlockSize) {
				if want := uint64(b) < head; d != want {
					t.Fatalf("stream block %d dirty=%v, want %v", b, d, want)
				}
			}
			for b, d := range dirtyBlocks(e, g.Ino, 151*chunk/BlockSize) {
				if d {
					continue
				}
				e.mu.Lock()
				_, cached := e.pages.Get(pageRef{Ino: g.Ino, Blk: uint64(b)})
				e.mu.Unlock()
				if cached {
					t.Fatalf("random-write block %d was destaged", b)
				}
			}
			e.mu.Lock()
			old := e.pool.meta[e.pool.oldestClean()]
			e.mu.Unlock()
			if old.ino != f.Ino || old.blk < head {
				t.Errorf("the next page to evict is %d/%d, want a destaged stream page", old.ino, old.blk)
			}
			if err := e.Sync(bg); err != nil {
				t.Fatal(err)
			}
			r.crash()
			r.start()
			var want []byte
			for i := range chunks {
				want = append(want, pattern(i, chunk)...)
			}
			if got := readAll(t, r.e, f.Ino); !bytes.Equal(got, want) {
				t.Fatal("the stream reads back wrong after a crash")
			}
		})
	}
}

func TestStreamDetection(t *testing.T) {
	r := newRig(t, Config{CacheSize: 1 << 20, SequentialCutoff: 8 * BlockSize})
	e := r.e
	f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, tc := range []struct {
		off, n uint64
		run    uint64
	}{
		{0, 4 * BlockSize, 4 * BlockSize},
		{4 * BlockSize, 4 * BlockSize, 8 * BlockSize},
		{12 * BlockSize, 4 * BlockSize, 12 * BlockSize},   // a small gap (requests out of order)
		{8 * BlockSize, 4 * BlockSize, 16 * BlockSize},    // the gap filled
		{100 << 20, BlockSize, BlockSize},                 // a seek: a new run
		{100<<20 + BlockSize, BlockSize, 2 * BlockSize},   // continues it
		{0, BlockSize, BlockSize},                         // back to the start: new run
		{streamSlack + 2*BlockSize, BlockSize, BlockSize}, // too far ahead
	} {
		e.noteStreamLocked(f.Ino, tc.off, tc.n)
		if got := e.streams[f.Ino].run; got != tc.run {
			t.Errorf("step %d: run %d, want %d", i, got, tc.run)
		}
	}
}

// Eviction order: LRU keeps a page that was read again; FIFO evicts it in
// the order pages came in.
func TestEvictionOrder(t *testing.T) {
	for _, tc := range []struct {
		ev       Eviction
		survives bool
	}{{EvictLRU, true}, {EvictFIFO, false}} {
		t.Run(tc.ev.String(), func(t *testing.T) {
			r := newRig(t, Config{CacheSize: 64 * BlockSize, DirtyBytes: 16 * BlockSize, Eviction: tc.ev, MaxDirtyAge: time.Hour})
			e := r.e
			var inos [3]Ino
			for i, n := range []int{32, 32, 16} {
				inos[i] = mustCreate(t, e, RootIno, fmt.Sprint(i), syscall.S_IFREG|0o644).Ino
				for p := range n {
					mustWrite(t, e, inos[i], uint64(p)*BlockSize, pattern(i*100+p, BlockSize))
				}
			}
			if err := e.Flush(bg); err != nil {
				t.Fatal(err)
			}
			e.mu.Lock()
			for _, ino := range inos {
				e.invalidateCleanLocked(ino, 0, 32*BlockSize)
			}
			free := e.pool.available()
			e.mu.Unlock()
			if free != 64 {
				t.Fatalf("%d pages available after dropping every clean page", free)
			}
			read := func(ino Ino, from, to uint64) {
				buf := make([]byte, BlockSize)
				for b := from; b < to; b++ {
					if _, err := e.Read(bg, ino, b*BlockSize, buf); err != nil {
						t.Fatal(err)
					}
				}
			}
			read(inos[0], 0, 32) // 32 pages, block 0 first in
			read(inos[1], 0, 32) // the pool is full
			read(inos[0], 0, 1)  // a hit: LRU makes it the newest
			read(inos[2], 0, 16) // 16 evictions
			e.mu.Lock()
			_, cached := e.pages.Get(pageRef{Ino: inos[0], Blk: 0})
			_, next := e.pages.Get(pageRef{Ino: inos[0], Blk: 17})
			e.mu.Unlock()
			if cached != tc.survives {
				t.Errorf("the re-read page cached=%v, want %v", cached, tc.survives)
			}
			if !next {
				t.Error("block 17 of the first file was evicted before older pages")
			}
			if e.Stats().Evictions.Load() < 16 {
				t.Errorf("%d evictions, want 16", e.Stats().Evictions.Load())
			}
		})
	}
}

// BenchmarkDestageJobs measures a full destage of 64 MiB of dirty pages
// with copy and append in turn (1 job) and pipelined (several jobs).
func BenchmarkDestageJobs(b *testing.B) {
	for _, jobs := range []int{1, 2, 4} {
		b.Run(fmt.Sprint(jobs), func(b *testing.B) {
			const size = 64 << 20
			r := newRig(b, Config{CacheSize: 2 * size, DirtyBytes: 2 * size, HighWatermark: 1, LowWatermark: 0.5, MaxDirtyAge: time.Hour, WritebackJobs: jobs})
			e := r.e
			f, err := e.Create(bg, RootIno, "f", NewObject{Mode: syscall.S_IFREG | 0o644}, root())
			if err != nil {
				b.Fatal(err)
			}
			data := pattern(1, 1<<20)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for off := 0; off < size; off += len(data) {
					if _, err := e.Write(bg, f.Ino, uint64(off), data, WriteOpts{}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if err := e.Flush(bg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
