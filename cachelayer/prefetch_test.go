package cachelayer

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// jobsOf runs reads through the stream logic of an engine without workers
// and returns the read-ahead jobs they enqueue.
func jobsOf(t *testing.T, maxWin int64, size uint64, reads [][2]uint64) []pfJob {
	jobs, _ := jobsAt(t, maxWin, size, reads)
	return jobs
}

// jobsAt is jobsOf, also giving the end of the read that enqueued each job.
func jobsAt(t *testing.T, maxWin int64, size uint64, reads [][2]uint64) ([]pfJob, []uint64) {
	t.Helper()
	e := &Engine{cfg: Config{Prefetch: PrefetchSequential, PrefetchMaxWindow: maxWin}}
	e.pf.streams = make(map[Ino]*[streamsPerFile]stream)
	e.pf.jobs = make(chan pfJob, 1<<16)
	var jobs []pfJob
	var at []uint64
	for _, r := range reads {
		e.noteRead(7, r[0], r[1], size)
		// The chunks of one step, as one job.
		var step []pfJob
		for len(e.pf.jobs) > 0 {
			step = append(step, <-e.pf.jobs)
		}
		for i, j := range step {
			if j.to-j.from > prefetchChunk || (i > 0 && j.from != step[i-1].to) {
				t.Fatalf("step chunks %+v", step)
			}
		}
		if len(step) > 0 {
			jobs = append(jobs, pfJob{ino: step[0].ino, from: step[0].from, to: step[len(step)-1].to})
			at = append(at, r[0]+r[1])
		}
	}
	return jobs, at
}

func TestPrefetchStreams(t *testing.T) {
	const size = 64 << 20
	seq := func(from, n, count uint64) [][2]uint64 {
		var r [][2]uint64
		for i := range count {
			r = append(r, [2]uint64{from + i*n, n})
		}
		return r
	}

	// Sequential: from the third read on, jobs run ahead, contiguous,
	// each window twice the last up to the maximum.
	jobs, at := jobsAt(t, 1<<20, size, seq(0, 64<<10, 200))
	if len(jobs) < 5 {
		t.Fatalf("sequential reads enqueued %d jobs", len(jobs))
	}
	if jobs[0].from != 3*64<<10 {
		t.Errorf("first job from %d, want just past the third read", jobs[0].from)
	}
	// The window (how far past the reader a job reaches) doubles from
	// four reads' worth to the maximum.
	wantLead := []uint64{256 << 10, 512 << 10, 1 << 20, 1 << 20, 1 << 20}
	for i, j := range jobs {
		if i > 0 && j.from != jobs[i-1].to {
			t.Errorf("job %d [%d,%d) does not follow [%d,%d)", i, j.from, j.to, jobs[i-1].from, jobs[i-1].to)
		}
		if i < len(wantLead) && j.to-at[i] != wantLead[i] {
			t.Errorf("job %d reaches %d past the read, want %d", i, j.to-at[i], wantLead[i])
		}
		if j.to-at[i] > 1<<20 {
			t.Errorf("job %d reaches %d past the read, beyond the maximum window", i, j.to-at[i])
		}
	}
	if last := jobs[len(jobs)-1]; last.to <= 200*64<<10 || last.to > 200*64<<10+1<<20 {
		t.Errorf("read ahead to %d after reading to %d", last.to, 200*64<<10)
	}

	// Random reads never start a stream.
	rng := rand.New(rand.NewPCG(1, 2))
	var random [][2]uint64
	for range 2000 {
		random = append(random, [2]uint64{rng.Uint64N(size/4096) * 4096, 4096})
	}
	if jobs := jobsOf(t, 1<<20, size, random); len(jobs) != 0 {
		t.Errorf("random reads enqueued %d jobs, first %+v", len(jobs), jobs[0])
	}

	// Two interleaved sequential readers each get their own stream.
	var two [][2]uint64
	for i := range uint64(50) {
		two = append(two, [2]uint64{i * 128 << 10, 128 << 10}, [2]uint64{32<<20 + i*128<<10, 128 << 10})
	}
	var low, high int
	for _, j := range jobsOf(t, 8<<20, size, two) {
		if j.from < 32<<20 {
			low++
		} else {
			high++
		}
	}
	if low == 0 || high == 0 {
		t.Errorf("interleaved readers: %d jobs for the first, %d for the second", low, high)
	}

	// Nothing past the end of the file.
	for _, j := range jobsOf(t, 8<<20, 1<<20, seq(0, 64<<10, 16)) {
		if j.to > 1<<20 {
			t.Errorf("job [%d,%d) past the end of a 1MiB file", j.from, j.to)
		}
	}
}

// coldFile writes a file of n bytes, destages it and restarts the engine,
// so that its data is only in the backend.
func coldFile(t *testing.T, r *rig, n int) (Ino, []byte) {
	t.Helper()
	f := mustCreate(t, r.e, RootIno, "f", modeFile)
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	mustWrite(t, r.e, f.Ino, 0, data)
	r.restart()
	return f.Ino, data
}

func readAt(t *testing.T, e *Engine, ino Ino, off, n uint64) []byte {
	t.Helper()
	buf := make([]byte, n)
	got, err := e.Read(bg, ino, off, buf)
	if err != nil {
		t.Fatalf("read %d at %d: %v", n, off, err)
	}
	return buf[:got]
}

// TestPrefetchSequentialReadsAhead checks that sequential reads of a file
// whose data is only in the backend read ahead of themselves, that the
// pages read ahead serve the next reads, and that random reads do not.
func TestPrefetchSequentialReadsAhead(t *testing.T) {
	const size = 8 << 20
	const chunk = 128 << 10
	r := newRig(t, Config{CacheSize: 64 << 20, Prefetch: PrefetchSequential, PrefetchMaxWindow: 2 << 20})
	ino, data := coldFile(t, r, size)
	e := r.e
	for off := uint64(0); off < 4*chunk; off += chunk {
		if got := readAt(t, e, ino, off, chunk); !bytes.Equal(got, data[off:off+chunk]) {
			t.Fatalf("read at %d: wrong data", off)
		}
	}
	e.pf.pending.Wait()
	if e.stats.PrefetchBytes.Load() == 0 {
		t.Fatal("sequential reads of a cold file read nothing ahead")
	}
	// What was read ahead is cached, and the next reads hit it.
	misses := e.stats.ReadMisses.Load()
	hits := e.stats.PrefetchHits.Load()
	if got := readAt(t, e, ino, 4*chunk, chunk); !bytes.Equal(got, data[4*chunk:5*chunk]) {
		t.Fatal("read after prefetch: wrong data")
	}
	if e.stats.ReadMisses.Load() != misses {
		t.Errorf("the read after the prefetch missed the cache %d times", e.stats.ReadMisses.Load()-misses)
	}
	if got := e.stats.PrefetchHits.Load() - hits; got != chunk/BlockSize {
		t.Errorf("%d prefetch hits for a %d-block read", got, chunk/BlockSize)
	}
	// Reading on to the end: the data is right, and most blocks were
	// prefetched (only the first reads missed).
	for off := uint64(5 * chunk); off < size; off += chunk {
		if got := readAt(t, e, ino, off, chunk); !bytes.Equal(got, data[off:off+chunk]) {
			t.Fatalf("read at %d: wrong data", off)
		}
	}
	e.pf.pending.Wait()
	if pb := e.stats.PrefetchBytes.Load(); pb < size/2 {
		t.Errorf("prefetched %d of %d bytes", pb, size)
	}
	if e.stats.PrefetchWaste.Load() != 0 {
		t.Errorf("%d prefetched pages wasted with room to spare", e.stats.PrefetchWaste.Load())
	}

	// Random reads of the cold file again: nothing read ahead.
	r.restart()
	e = r.e
	rng := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		off := rng.Uint64N(size/BlockSize) * BlockSize
		if got := readAt(t, e, ino, off, BlockSize); !bytes.Equal(got, data[off:off+BlockSize]) {
			t.Fatalf("random read at %d: wrong data", off)
		}
	}
	e.pf.pending.Wait()
	if pb := e.stats.PrefetchBytes.Load(); pb != 0 {
		t.Errorf("random reads prefetched %d bytes", pb)
	}
	if e.stats.ReadMisses.Load() == 0 {
		t.Error("random reads of a cold file did not miss")
	}
}

// TestPrefetchWholeFile checks that opening a file warms it, and that
// prefetched pages dropped unread count as waste.
func TestPrefetchWholeFile(t *testing.T) {
	const size = 4 << 20
	r := newRig(t, Config{CacheSize: 32 << 20, Prefetch: PrefetchWholeFile})
	ino, data := coldFile(t, r, size)
	e := r.e
	e.Opened(ino)
	e.pf.pending.Wait()
	if pb := e.stats.PrefetchBytes.Load(); pb != size {
		t.Fatalf("opening warmed %d bytes of %d", pb, size)
	}
	if got := readAt(t, e, ino, 0, size/2); !bytes.Equal(got, data[:size/2]) {
		t.Fatal("wrong data")
	}
	if m := e.stats.ReadMisses.Load(); m != 0 {
		t.Errorf("%d misses reading a warmed file", m)
	}
	if h := e.stats.PrefetchHits.Load(); h != size/2/BlockSize {
		t.Errorf("%d prefetch hits, want %d", h, size/2/BlockSize)
	}
	if _, err := e.SetAttr(bg, ino, SetAttr{Size: ptr(uint64(0))}); err != nil {
		t.Fatal(err)
	}
	if w := e.stats.PrefetchWaste.Load(); w != size/2/BlockSize {
		t.Errorf("%d pages wasted, want the %d never read", w, size/2/BlockSize)
	}
}

// TestPrefetchNone checks that the default reads only what is asked.
func TestPrefetchNone(t *testing.T) {
	r := newRig(t, Config{CacheSize: 32 << 20})
	ino, _ := coldFile(t, r, 2<<20)
	e := r.e
	e.Opened(ino)
	for off := uint64(0); off < 2<<20; off += 64 << 10 {
		readAt(t, e, ino, off, 64<<10)
	}
	if pb := e.stats.PrefetchBytes.Load(); pb != 0 {
		t.Errorf("prefetch none read %d bytes ahead", pb)
	}
}
