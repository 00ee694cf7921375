package cachelayer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// dropCleanPages evicts ino's clean pages, so that reads go to the backend.
func dropCleanPages(e *Engine, ino Ino) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.invalidateCleanLocked(ino, 0, math.MaxUint64-BlockSize)
}

// cleanWorld drives an engine with files whose contents a model keeps.
type cleanWorld struct {
	t     *testing.T
	r     *rig
	rnd   *rand.Rand
	files map[string][]byte
}

func newCleanWorld(t *testing.T, r *rig, seed int64) *cleanWorld {
	return &cleanWorld{t: t, r: r, rnd: rand.New(rand.NewSource(seed)), files: make(map[string][]byte)}
}

func (w *cleanWorld) ino(name string) Ino {
	w.t.Helper()
	in, err := w.r.e.Lookup(RootIno, name)
	if err != nil {
		w.t.Fatalf("lookup %s: %v", name, err)
	}
	return in.Ino
}

func (w *cleanWorld) names() []string { return slices.Sorted(maps.Keys(w.files)) }

// write writes n random bytes at off, creating the file if needed.
func (w *cleanWorld) write(name string, off, n int) {
	w.t.Helper()
	if _, ok := w.files[name]; !ok {
		in := mustCreate(w.t, w.r.e, RootIno, name, syscall.S_IFREG|0o644)
		w.r.e.Unref(in.Ino, 1)
		w.files[name] = nil
	}
	p := make([]byte, n)
	w.rnd.Read(p)
	mustWrite(w.t, w.r.e, w.ino(name), uint64(off), p)
	c := w.files[name]
	if len(c) < off+n {
		c = append(c, make([]byte, off+n-len(c))...)
	}
	copy(c[off:], p)
	w.files[name] = c
}

func (w *cleanWorld) truncate(name string, size int) {
	w.t.Helper()
	sz := uint64(size)
	if _, err := w.r.e.SetAttr(bg, w.ino(name), SetAttr{Size: &sz}); err != nil {
		w.t.Fatalf("truncate %s to %d: %v", name, size, err)
	}
	c := w.files[name]
	if len(c) >= size {
		c = c[:size]
	} else {
		c = append(c, make([]byte, size-len(c))...)
	}
	w.files[name] = c
}

func (w *cleanWorld) unlink(name string) {
	w.t.Helper()
	if err := w.r.e.Unlink(bg, RootIno, name); err != nil {
		w.t.Fatalf("unlink %s: %v", name, err)
	}
	delete(w.files, name)
}

func (w *cleanWorld) live() int64 {
	var n int64
	for _, c := range w.files {
		n += int64(len(c))
	}
	return n
}

// verify reads every byte of every file back.
func (w *cleanWorld) verify(when string) {
	w.t.Helper()
	for _, name := range w.names() {
		got := readAll(w.t, w.r.e, w.ino(name))
		if want := w.files[name]; !bytes.Equal(got, want) {
			w.t.Fatalf("%s: %s: sha256 %x, want %x (%d vs %d bytes)%s", when, name,
				sha256.Sum256(got), sha256.Sum256(want), len(got), len(want), diffRanges(got, want))
		}
	}
	w.checkUsage(when)
}

// checkUsage compares the maintained live accounting with a count from
// scratch.
func (w *cleanWorld) checkUsage(when string) {
	w.t.Helper()
	e := w.r.e
	e.mu.Lock()
	got := maps.Clone(e.st.usage.live)
	want := usageOf(&e.st).live
	e.mu.Unlock()
	if !maps.Equal(got, want) {
		w.t.Fatalf("%s: live accounting %v, counted from the extents %v", when, got, want)
	}
}

func (w *cleanWorld) flush() {
	w.t.Helper()
	if err := w.r.e.Flush(bg); err != nil {
		w.t.Fatalf("flush: %v", err)
	}
}

func (w *cleanWorld) clean() {
	w.t.Helper()
	if err := w.r.e.Clean(bg); err != nil {
		w.t.Fatalf("clean: %v", err)
	}
}

// backendBytes is the space the backend directory uses: segments and
// metadata files.
func backendBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, sub := range []string{"segments", "meta"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			n += fi.Size()
		}
	}
	return n
}

func cleanConfig() Config {
	return Config{CacheSize: 32 << 20, CleanThreshold: 0.5}
}

// An overwrite-heavy workload, destaged and cleaned round after round,
// keeps the backend within 1.5 times the live data.
func TestCleanBoundsSpaceUnderOverwrites(t *testing.T) {
	const (
		files    = 16
		fileSize = 512 << 10
		chunk    = 64 << 10
		rounds   = 16
	)
	r := newRigSeg(t, cleanConfig(), 1<<20)
	w := newCleanWorld(t, r, 1)
	for i := range files {
		w.write(fmt.Sprintf("f%02d", i), 0, fileSize)
	}
	w.flush()
	worst := 0.0
	for round := range rounds {
		// Rewrite a quarter of the data: chunks of random files, at random
		// chunk-aligned places, some twice.
		for range files * fileSize / chunk / 4 {
			w.write(fmt.Sprintf("f%02d", w.rnd.Intn(files)), w.rnd.Intn(fileSize/chunk)*chunk, chunk)
		}
		w.flush()
		w.clean()
		w.checkUsage(fmt.Sprintf("round %d", round))
		used, live := backendBytes(t, r.dir), w.live()
		ratio := float64(used) / float64(live)
		worst = max(worst, ratio)
		if ratio > 1.5 {
			t.Fatalf("round %d: backend uses %d bytes for %d live: %.2fx", round, used, live, ratio)
		}
	}
	ci := r.e.CleanInfo()
	t.Logf("worst space/live %.3f; %+v", worst, ci)
	if ci.CleanedSegments == 0 || ci.CleanedBytes == 0 {
		t.Fatalf("nothing was cleaned: %+v", ci)
	}
	if ci.BelowThreshold != 0 {
		t.Fatalf("segments left below the threshold: %+v", ci)
	}
	w.verify("after cleaning")
	r.restart()
	w.verify("after remount")
}

// Cleaning never frees a live extent: extents split by small overwrites,
// cut by truncates and holes, and files deleted, with readers running
// through the cleaning, all read back right after it and after a remount.
func TestCleanKeepsLiveExtents(t *testing.T) {
	tests := []struct {
		name string
		seed int64
	}{
		{"seed1", 1},
		{"seed2", 2},
		{"seed3", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRigSeg(t, cleanConfig(), 1<<20)
			w := newCleanWorld(t, r, tc.seed)
			for i := range 12 {
				w.write(fmt.Sprintf("f%02d", i), 0, 256<<10+w.rnd.Intn(64<<10))
			}
			w.flush()
			for round := range 4 {
				for range 40 {
					name := w.names()[w.rnd.Intn(len(w.files))]
					size := len(w.files[name])
					switch op := w.rnd.Intn(10); {
					case op < 6: // small overwrites split records' extents
						w.write(name, w.rnd.Intn(size+1), 1+w.rnd.Intn(12<<10))
					case op < 8:
						w.truncate(name, w.rnd.Intn(size+1))
					case op < 9: // a hole, then data past it
						w.write(name, size+w.rnd.Intn(64<<10), 1+w.rnd.Intn(32<<10))
					default:
						if len(w.files) > 4 {
							w.unlink(name)
						} else {
							w.write(fmt.Sprintf("g%02d-%d", round, w.rnd.Intn(1000)), 0, 100<<10)
						}
					}
				}
				w.flush()
				w.checkUsage("before cleaning")

				// Readers run through the cleaning; the model does not
				// change meanwhile.
				var wg sync.WaitGroup
				stop := make(chan struct{})
				errc := make(chan error, 4)
				for _, name := range w.names()[:4] {
					ino, want := w.ino(name), w.files[name]
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							buf := make([]byte, len(want))
							n, err := r.e.Read(bg, ino, 0, buf)
							if err != nil || !bytes.Equal(buf[:n], want) {
								errc <- fmt.Errorf("read %s during cleaning: n=%d err=%v", name, n, err)
								return
							}
							dropCleanPages(r.e, ino)
						}
					}()
				}
				w.clean()
				close(stop)
				wg.Wait()
				select {
				case err := <-errc:
					t.Fatal(err)
				default:
				}
				w.verify(fmt.Sprintf("round %d after cleaning", round))
			}
			ci := r.e.CleanInfo()
			if ci.CleanedSegments == 0 || ci.CleanedBytes == 0 {
				t.Fatalf("nothing was cleaned: %+v", ci)
			}
			r.restart()
			w.verify("after remount")
		})
	}
}

// A crash at any point of a cleaning round loses nothing, and a later
// round frees what the interrupted one left behind.
func TestCleanCrash(t *testing.T) {
	const done cleanStage = -1 // the crash comes after a complete round
	for _, stage := range []cleanStage{cleanCopied, cleanRepointed, cleanPersisted, done} {
		name := stage.String()
		if stage == done {
			name = "done"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// No background cleaner: the rounds run where the test says.
			cfg := cleanConfig()
			cfg.CleanThreshold = 0
			r := newRigSeg(t, cfg, 1<<20)
			manual := func() { r.e.cfg.CleanThreshold = 0.5 }
			manual()
			w := newCleanWorld(t, r, int64(stage)+10)
			for i := range 8 {
				w.write(fmt.Sprintf("f%02d", i), 0, 384<<10)
			}
			w.flush()
			for i := range 5 {
				w.write(fmt.Sprintf("f%02d", i), 0, 384<<10)
			}
			for range 60 {
				w.write(fmt.Sprintf("f%02d", w.rnd.Intn(8)), w.rnd.Intn(384<<10), 1+w.rnd.Intn(48<<10))
			}
			w.flush()
			// Dirty data in the log only, made durable by fsync: the
			// round's metadata must keep it replayable.
			for range 10 {
				w.write(fmt.Sprintf("f%02d", w.rnd.Intn(8)), w.rnd.Intn(384<<10), 1+w.rnd.Intn(16<<10))
			}
			if err := r.e.Sync(bg); err != nil {
				t.Fatal(err)
			}
			if before := r.e.CleanInfo(); before.BelowThreshold == 0 {
				t.Fatalf("workload left nothing to clean: %+v", before)
			}
			errCrash := errors.New("crash")
			reached := false
			r.e.clean.stopAt = func(s cleanStage) error {
				if s == stage {
					reached = true
					return errCrash
				}
				return nil
			}
			if stage == done {
				w.clean()
				if ci := r.e.CleanInfo(); ci.CleanedSegments == 0 {
					t.Fatalf("nothing cleaned before the crash: %+v", ci)
				}
			} else if err := r.e.Clean(bg); !errors.Is(err, errCrash) || !reached {
				t.Fatalf("clean: %v (stage reached: %v), want the crash at %v", err, reached, stage)
			}
			r.crash()
			r.start()
			manual()
			w.verify("after the crash")
			w.clean()
			ci := r.e.CleanInfo()
			if ci.BelowThreshold != 0 || (stage != done && ci.CleanedSegments == 0) {
				t.Fatalf("after the crash, cleaning left %+v", ci)
			}
			for _, s := range r.be.Segments() {
				r.e.mu.Lock()
				live := r.e.st.usage.live[s.Number]
				r.e.mu.Unlock()
				if live == 0 && !s.Active {
					t.Fatalf("segment %d holds nothing live and was not freed", s.Number)
				}
			}
			w.verify("after cleaning again")
			r.restart()
			w.verify("after remount")
		})
	}
}

// The background cleaner frees segments without being asked.
func TestCleanerRunsInBackground(t *testing.T) {
	r := newRigSeg(t, cleanConfig(), 1<<20)
	w := newCleanWorld(t, r, 7)
	for i := range 4 {
		w.write(fmt.Sprintf("f%02d", i), 0, 1<<20)
	}
	w.flush()
	for i := range 4 {
		w.write(fmt.Sprintf("f%02d", i), 0, 1<<20) // every old byte dead
	}
	w.flush()
	// Waits for an event; the bound only keeps a broken cleaner from
	// hanging the test run.
	for i := 0; r.e.CleanInfo().BelowThreshold > 0; i++ {
		if i > 3000 {
			t.Fatalf("the background cleaner did not run: %+v", r.e.CleanInfo())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ci := r.e.CleanInfo(); ci.CleanedSegments == 0 {
		t.Fatalf("segments went away without the cleaner: %+v", ci)
	}
	w.verify("after background cleaning")
}

// With a zero threshold nothing is cleaned.
func TestCleanDisabled(t *testing.T) {
	cfg := cleanConfig()
	cfg.CleanThreshold = 0
	r := newRigSeg(t, cfg, 1<<20)
	w := newCleanWorld(t, r, 8)
	w.write("f", 0, 2<<20)
	w.flush()
	w.write("f", 0, 2<<20)
	w.flush()
	w.clean()
	if ci := r.e.CleanInfo(); ci.CleanedSegments != 0 || ci.Segments < 4 {
		t.Fatalf("disabled cleaning: %+v", ci)
	}
	w.verify("uncleaned")
}

func TestCleanThresholdValidation(t *testing.T) {
	for _, th := range []float64{-0.1, 1, 1.5} {
		cfg := cleanConfig()
		cfg.CleanThreshold = th
		cfg.setDefaults()
		if err := cfg.validate(); err == nil {
			t.Errorf("threshold %v accepted", th)
		}
	}
}

func TestCleanYieldsToForeground(t *testing.T) {
	var y cleanYield
	// Idle: runs every tick.
	for i := range 3 {
		if !y.mayRun(0) {
			t.Fatalf("idle tick %d skipped", i)
		}
	}
	// Busy: gives way cleanMaxYield ticks, then runs once, then gives way again.
	activity := int64(0)
	var runs []int
	for i := range 2*cleanMaxYield + 2 {
		activity += 100
		if y.mayRun(activity) {
			runs = append(runs, i)
		}
	}
	if want := []int{cleanMaxYield, 2*cleanMaxYield + 1}; !slices.Equal(runs, want) {
		t.Fatalf("under load it ran at ticks %v, want %v", runs, want)
	}
	// Quiet again: runs at once.
	if !y.mayRun(activity) {
		t.Fatal("quiet tick after load skipped")
	}
}

// BenchmarkClean measures a cleaning pass over segments left half live by
// overwriting every other 64 KiB chunk of 16 MiB of files: MB/s is live
// bytes moved per second (each freed segment also costs the metadata round).
func BenchmarkClean(b *testing.B) {
	const (
		files    = 16
		fileSize = 1 << 20
		chunk    = 64 << 10
	)
	var moved, freed int64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cfg := cleanConfig()
		cfg.CleanThreshold = 0 // no background cleaner
		r := newRigSeg(b, cfg, 4<<20)
		r.e.cfg.CleanThreshold = 0.6
		p := make([]byte, fileSize)
		rand.New(rand.NewSource(int64(i))).Read(p)
		var inos []Ino
		for f := range files {
			in := mustCreate(b, r.e, RootIno, fmt.Sprintf("f%02d", f), syscall.S_IFREG|0o644)
			inos = append(inos, in.Ino)
			mustWrite(b, r.e, in.Ino, 0, p)
		}
		if err := r.e.Flush(bg); err != nil {
			b.Fatal(err)
		}
		for _, ino := range inos {
			for off := 0; off < fileSize; off += 2 * chunk {
				mustWrite(b, r.e, ino, uint64(off), p[:chunk])
			}
		}
		if err := r.e.Flush(bg); err != nil {
			b.Fatal(err)
		}
		before := r.e.CleanInfo()
		b.StartTimer()
		if err := r.e.Clean(bg); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		after := r.e.CleanInfo()
		moved += after.CleanedBytes - before.CleanedBytes
		freed += after.FreedBytes - before.FreedBytes
		r.stop()
		b.StartTimer()
	}
	b.SetBytes(moved / int64(b.N))
	b.ReportMetric(float64(freed)/float64(b.N)/(1<<20), "MiB-freed/op")
}
