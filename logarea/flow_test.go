package logarea

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/dcache/dcache/internal/device"
)

// bigRecord has an incompressible payload of n bytes.
func bigRecord(i uint64, n int) Record {
	r := makeRecord(i*3, 0) // i*3: the incompressible kind
	r.Payload = make([]byte, n)
	rng := rand.New(rand.NewPCG(i, 1))
	for j := 0; j < n; j += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(r.Payload[j:], w[:])
	}
	return r
}

// waitWaiters waits (without a clock) until n Reserve calls are queued.
func waitWaiters(l *Log, n int) {
	for {
		l.mu.Lock()
		k := len(l.waiters)
		l.mu.Unlock()
		if k >= n {
			return
		}
		runtime.Gosched()
	}
}

// TestFullLogWaitsForTrim fills a minimum-size log: Reserve waits, in
// arrival order, until Trim frees room; then a producer and a destager run
// many laps around the area, and nothing is lost across the wrap-arounds.
func TestFullLogWaitsForTrim(t *testing.T) {
	devs := []device.Device{device.NewMem(MinSize(Config{}))}
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{Compression: true}, nil)
	const size = 100 << 10
	var lsn LSN
	for l.Stats().FreeBytes >= int64(recordSize(size)) {
		lsn = appendRec(t, l, bigRecord(uint64(lsn)+1, size))
	}
	if lsn < 5 {
		t.Fatalf("only %d records fit", lsn)
	}

	type result struct {
		e   *Entry
		err error
	}
	big := make(chan result, 1)
	go func() {
		e, err := l.Reserve(context.Background(), bigRecord(uint64(lsn)+1, size))
		big <- result{e, err}
	}()
	waitWaiters(l, 1)
	// A small record would fit, but it must queue behind the big one.
	small := make(chan result, 1)
	go func() {
		e, err := l.Reserve(context.Background(), Record{Type: 1})
		small <- result{e, err}
	}()
	waitWaiters(l, 2)
	// A canceled Reserve leaves the queue.
	ctx, cancel := context.WithCancel(context.Background())
	canceled := make(chan error, 1)
	go func() {
		_, err := l.Reserve(ctx, Record{Type: 1})
		canceled <- err
	}()
	waitWaiters(l, 3)
	cancel()
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Reserve = %v", err)
	}
	select {
	case <-big:
		t.Fatal("Reserve returned while the log was full")
	case <-small:
		t.Fatal("a later Reserve overtook an earlier one")
	default:
	}
	if err := l.Sync(context.Background(), lsn); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(2); err != nil {
		t.Fatal(err)
	}
	rb, rs := <-big, <-small
	if rb.err != nil || rs.err != nil {
		t.Fatal(rb.err, rs.err)
	}
	if got, _ := l.Commit(rb.e); got != lsn+1 {
		t.Fatalf("lsn %d", got)
	}
	l.Cancel(rs.e)
	lsn++

	// Producer and destager, many laps: the destager syncs each committed
	// record and trims all but the newest, as destage would.
	var wg sync.WaitGroup
	const total = 300
	var mu sync.Mutex // the engine's lock
	committed := make(chan LSN, total)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for c := range committed {
			if err := l.Sync(context.Background(), c); err != nil {
				t.Error(err)
				return
			}
			if err := l.Trim(c - 1); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := uint64(1); i <= total; i++ {
		rec := bigRecord(uint64(lsn)+i, int(i%7)*40<<10)
		e, err := l.Reserve(context.Background(), rec)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got, err := l.Commit(e)
		mu.Unlock()
		if err != nil || got != lsn+LSN(i) {
			t.Fatalf("commit %d: lsn %d, %v", i, got, err)
		}
		committed <- got
	}
	close(committed)
	if err := l.Sync(context.Background(), lsn+total); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	st := l.Stats()
	if laps := float64(st.StoredBytes) / float64(st.AreaBytes); laps < 5 {
		t.Errorf("only %.1f laps around the area", laps)
	}
	tail := st.TailLSN
	l.Close()
	l = mustOpen(t, devs, Config{Compression: true}, nil)
	defer l.Close()
	got, last := replayAll(t, l, tail-1)
	if last != lsn+total || len(got) != int(last-tail+1) {
		t.Fatalf("replayed %d records up to %d, want %d..%d", len(got), last, tail, lsn+total)
	}
	for _, g := range got {
		if !equalRecord(g.rec, bigRecord(uint64(g.lsn), int(uint64(g.lsn)-uint64(lsn))%7*40<<10)) {
			t.Fatalf("lsn %d differs after wrap-around", g.lsn)
		}
	}
}

// TestGroupCommit runs many committers that each Sync their own record on
// slow-syncing replicas: they must share device syncs.
func TestGroupCommit(t *testing.T) {
	for _, replicas := range []int{1, 2} {
		inner := mems(replicas, 4<<20)
		mustFormat(t, inner)
		devs := make([]device.Device, replicas)
		faulty := make([]*device.Faulty, replicas)
		for i := range devs {
			// A sync takes a while, as on a disk, so Syncs pile up behind it.
			faulty[i] = device.NewFaulty(inner[i], device.Slow(device.OpSync, 300_000))
			devs[i] = faulty[i]
		}
		l := mustOpen(t, devs, Config{}, nil)
		const workers, each = 16, 30
		var mu sync.Mutex
		var wg sync.WaitGroup
		_, _, before := faulty[0].Counts()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					e, err := l.Reserve(context.Background(), makeRecord(uint64(w*1000+i), 4096))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					lsn, err := l.Commit(e)
					mu.Unlock()
					if err != nil {
						t.Error(err)
						return
					}
					if err := l.Sync(context.Background(), lsn); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		st := l.Stats()
		for i, f := range faulty {
			_, _, syncs := f.Counts()
			if syncs-before >= workers*each {
				t.Errorf("%d replicas: replica %d: %d device syncs for %d Syncs", replicas, i, syncs-before, workers*each)
			}
		}
		if st.MaxGroup < 2 || st.Records != workers*each || st.SyncRounds >= workers*each {
			t.Errorf("%d replicas: max group %d, records %d, sync rounds %d", replicas, st.MaxGroup, st.Records, st.SyncRounds)
		}
		t.Logf("%d replicas: %d Syncs served by %d sync rounds (avg %.1f records, max %d) and %d writes (avg %.1f records)",
			replicas, workers*each, st.SyncRounds, st.AvgGroup, st.MaxGroup, st.Batches, st.AvgBatch)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAPIMisuse(t *testing.T) {
	devs := mems(1, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	ctx := context.Background()
	if _, err := l.Reserve(ctx, Record{}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("type 0: %v", err)
	}
	if _, err := l.Reserve(ctx, Record{Type: 1, Payload: make([]byte, MaxPayload+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	if lsn := appendRec(t, l, Record{Type: 1, Payload: make([]byte, MaxPayload)}); lsn != 1 {
		t.Errorf("max payload: lsn %d", lsn)
	}
	e, err := l.Reserve(ctx, Record{Type: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(e); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(e); !errors.Is(err, ErrEntryUsed) {
		t.Errorf("second Commit: %v", err)
	}
	e, _ = l.Reserve(ctx, Record{Type: 3})
	l.Cancel(e)
	l.Cancel(e) // harmless
	if _, err := l.Commit(e); !errors.Is(err, ErrEntryUsed) {
		t.Errorf("Commit after Cancel: %v", err)
	}
	if st := l.Stats(); st.ReservedBytes != 0 {
		t.Errorf("%d bytes still reserved", st.ReservedBytes)
	}
	if err := l.Sync(ctx, 3); !errors.Is(err, ErrBadLSN) {
		t.Errorf("Sync of an uncommitted lsn: %v", err)
	}
	if err := l.Sync(ctx, 0); err != nil {
		t.Errorf("Sync(0): %v", err)
	}
	if err := l.Trim(3); !errors.Is(err, ErrBadLSN) {
		t.Errorf("Trim past the end: %v", err)
	}
	if _, err := l.Replay(0, nil); !errors.Is(err, ErrReplayOrder) {
		t.Errorf("Replay after append: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Sync(cctx, 2); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Sync with canceled context: %v", err)
	}
	pending, _ := l.Reserve(ctx, Record{Type: 4})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(pending); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v", err)
	}
	if _, err := l.Reserve(ctx, Record{Type: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Reserve after Close: %v", err)
	}
	if err := l.Sync(ctx, 2); err != nil {
		t.Errorf("Sync of a durable lsn after Close: %v", err)
	}
	if err := l.Trim(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Trim after Close: %v", err)
	}
}

// TestLSNsContinue: after a clean close with everything trimmed the log is
// empty, and LSNs go on from where they were.
func TestLSNsContinue(t *testing.T) {
	devs := mems(1, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	if err := appendSynced(t, l, 1, 10); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(10); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(4); err != nil { // below the tail: nothing
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, devs, Config{}, nil)
	st := l.Stats()
	if st.TailLSN != 11 || st.LastLSN != 10 || st.UsedBytes != 0 {
		t.Fatalf("reopened: tail %d last %d used %d", st.TailLSN, st.LastLSN, st.UsedBytes)
	}
	if got, last := replayAll(t, l, 10); len(got) != 0 || last != 10 {
		t.Fatalf("replayed %d, last %d", len(got), last)
	}
	if lsn := appendRec(t, l, fixedRecord(11)); lsn != 11 {
		t.Fatalf("next lsn %d, want 11", lsn)
	}
	l.Close()
}

func TestReplayBounds(t *testing.T) {
	devs := mems(1, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	if err := appendSynced(t, l, 1, 10); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(5); err != nil {
		t.Fatal(err)
	}
	l.Close()

	// The engine's checkpoint is older than the log's tail: records lost.
	l = mustOpen(t, devs, Config{}, nil)
	if _, err := l.Replay(3, func(LSN, Record) error { return nil }); !errors.Is(err, ErrBadLSN) {
		t.Errorf("Replay below the tail: %v", err)
	}
	if _, err := l.Replay(5, nil); !errors.Is(err, ErrReplayOrder) {
		t.Errorf("second Replay: %v", err)
	}
	l.Close()

	// fn's error stops the replay.
	l = mustOpen(t, devs, Config{}, nil)
	boom := errors.New("boom")
	last, err := l.Replay(5, func(lsn LSN, _ Record) error {
		if lsn == 8 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || last != 7 {
		t.Errorf("Replay with failing fn: %d, %v", last, err)
	}
	l.Close()

	// The checkpoint is newer than the log: LSNs jump past it, durably.
	l = mustOpen(t, devs, Config{}, nil)
	if got, last := replayAll(t, l, 20); len(got) != 0 || last != 20 {
		t.Fatalf("replay past the end: %d records, last %d", len(got), last)
	}
	if lsn := appendRec(t, l, fixedRecord(21)); lsn != 21 {
		t.Fatalf("after the jump: lsn %d", lsn)
	}
	if err := l.Sync(context.Background(), 21); err != nil {
		t.Fatal(err)
	}
	img := devs[0].(*device.Mem).Bytes()
	l.Close()
	l = mustOpen(t, []device.Device{device.NewMemFrom("crashed", img)}, Config{}, nil)
	defer l.Close()
	checkReplay(t, l, 20, 1)
}

// TestFileAndMmapDevices runs the log on real files: a preallocated file
// with fdatasync and a shared mapping with msync.
func TestFileAndMmapDevices(t *testing.T) {
	for _, kind := range []string{"file", "mmap"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			open := device.OpenFile
			if kind == "mmap" {
				open = device.OpenMmap
			}
			paths := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
			var devs []device.Device
			for _, p := range paths {
				d, err := open(p, testSize, true)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.WriteAt(bytes.Repeat([]byte{0xee}, testSize), 0); err != nil {
					t.Fatal(err)
				}
				devs = append(devs, d)
			}
			mustFormat(t, devs)
			// Format wrote the whole record area of a file (see Format).
			area := make([]byte, testSize-areaOffset)
			if _, err := devs[1].ReadAt(area, areaOffset); err != nil || !isZero(area) {
				t.Fatalf("record area not zeroed by Format: %v", err)
			}
			l := mustOpen(t, devs, Config{Compression: true}, nil)
			if err := appendSynced(t, l, 1, 50); err != nil {
				t.Fatal(err)
			}
			st := l.Stats()
			if st.Replicas[0].Kind != kind || st.Replicas[1].Syncs == 0 || st.Replicas[1].BytesWritten == 0 {
				t.Errorf("replica stats %+v", st.Replicas[1])
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			for _, d := range devs {
				d.Close()
			}
			devs = devs[:0]
			for _, p := range paths {
				d, err := open(p, 0, false)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				devs = append(devs, d)
			}
			l = mustOpen(t, devs, Config{Compression: true}, nil)
			defer l.Close()
			checkReplay(t, l, 0, 50)
		})
	}
}

func TestStats(t *testing.T) {
	devs := mems(2, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{WriteQuorum: QuorumAll, Compression: true}, nil)
	defer l.Close()
	for i := uint64(1); i <= 20; i++ {
		appendRec(t, l, makeRecord(i, 2000))
	}
	if err := l.Sync(context.Background(), 20); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(5); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if st.TailLSN != 6 || st.LastLSN != 20 || st.DurableLSN != 20 || st.Records != 20 || st.Healthy != 2 || st.Need != 2 {
		t.Errorf("stats %+v", st)
	}
	if st.UsedBytes <= 0 || st.FreeBytes != st.AreaBytes-st.UsedBytes || st.Batches == 0 || st.AvgBatch <= 0 || st.SyncRounds == 0 {
		t.Errorf("stats %+v", st)
	}
	if st.StoredBytes >= st.PayloadBytes+20*headerSize+20*recordAlign {
		t.Errorf("stored %d for %d payload bytes: nothing compressed?", st.StoredBytes, st.PayloadBytes)
	}
	for _, r := range st.Replicas {
		if r.Health != HealthOK || r.HeadLSN != 20 || r.DurableLSN != 20 || r.UsedBytes != st.UsedBytes || r.Syncs == 0 || r.Writes == 0 {
			t.Errorf("replica stats %+v", r)
		}
	}
	if st.Syncs != st.Replicas[0].Syncs+st.Replicas[1].Syncs {
		t.Errorf("sync total %d", st.Syncs)
	}
}

// TestReserveSize: room reserved by size, the record built later (as the
// engine does for namespace ops under its lock).
func TestReserveSize(t *testing.T) {
	devs := mems(1, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{Compression: true}, nil)
	defer l.Close()
	ctx := context.Background()
	if _, err := l.ReserveSize(ctx, MaxPayload+1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReserveSize over the maximum: %v", err)
	}
	e, err := l.ReserveSize(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.ReservedBytes != int64(recordSize(1000)) || e.Size() != st.ReservedBytes {
		t.Fatalf("reserved %d, entry %d", st.ReservedBytes, e.Size())
	}
	if _, err := l.Commit(e); !errors.Is(err, ErrBadRecord) {
		t.Errorf("Commit of a ReserveSize entry: %v", err)
	}
	if _, err := l.CommitRecord(e, Record{Type: 1, Payload: make([]byte, 1001)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("CommitRecord over the room: %v", err)
	}
	if _, err := l.CommitRecord(e, Record{}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("CommitRecord of type 0: %v", err)
	}
	want := makeRecord(5, 0)
	want.Payload = bytes.Repeat([]byte("namespace op "), 40) // 520 bytes, compressible
	if lsn, err := l.CommitRecord(e, want); err != nil || lsn != 1 {
		t.Fatalf("CommitRecord: %d, %v", lsn, err)
	}
	if _, err := l.CommitRecord(e, want); !errors.Is(err, ErrEntryUsed) {
		t.Errorf("second CommitRecord: %v", err)
	}
	// CommitRecord may also replace the record of a Reserve entry.
	e2, err := l.Reserve(ctx, makeRecord(6, 3000))
	if err != nil {
		t.Fatal(err)
	}
	if lsn, err := l.CommitRecord(e2, Record{Type: 7, Obj: 7}); err != nil || lsn != 2 {
		t.Fatalf("CommitRecord of a Reserve entry: %d, %v", lsn, err)
	}
	e3, _ := l.ReserveSize(ctx, 10)
	l.Cancel(e3)
	st := l.Stats()
	if st.ReservedBytes != 0 || st.Compressed != 0 || st.UsedBytes != int64(recordSize(520)+recordSize(0)) {
		t.Errorf("after commits: reserved %d, compressed %d, used %d", st.ReservedBytes, st.Compressed, st.UsedBytes)
	}
	if err := l.Sync(ctx, 2); err != nil {
		t.Fatal(err)
	}
	img := devs[0].(*device.Mem).Bytes()
	l2 := mustOpen(t, []device.Device{device.NewMemFrom("copy", img)}, Config{}, nil)
	defer l2.Close()
	got, _ := replayAll(t, l2, 0)
	if len(got) != 2 || !equalRecord(got[0].rec, want) || !equalRecord(got[1].rec, Record{Type: 7, Obj: 7}) {
		t.Fatalf("replayed %+v", got)
	}
}

// TestTrimDuringReplay: the engine may destage, and so trim, from inside
// the replay callback.
func TestTrimDuringReplay(t *testing.T) {
	devs := mems(1, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	if err := appendSynced(t, l, 1, 20); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = mustOpen(t, devs, Config{}, nil)
	defer l.Close()
	n := 0
	last, err := l.Replay(0, func(lsn LSN, r Record) error {
		n++
		if !equalRecord(r, fixedRecord(uint64(lsn))) {
			t.Fatalf("lsn %d differs", lsn)
		}
		if lsn%5 == 0 {
			return l.Trim(lsn - 1)
		}
		return nil
	})
	if err != nil || last != 20 || n != 20 {
		t.Fatalf("Replay = %d, %v after %d records", last, err, n)
	}
	if st := l.Stats(); st.TailLSN != 20 {
		t.Errorf("tail %d, want 20", st.TailLSN)
	}
}
