package backend

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestAppendReadSizes(t *testing.T) {
	sizes := []int{1, 7, 100, 4095, 4096, 4097, 8191, 65536, 65537, 300_000, MaxRecordLen - 1, MaxRecordLen}
	tests := []struct {
		name string
		cfg  Config
		sync bool // Sync before reading (else most reads come from the write buffer)
	}{
		{"buffered", Config{}, false},
		{"synced", Config{}, true},
		{"small segments and buffer", Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer}, true},
		{"small segments unsynced", Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := mustOpen(t, OSFS{}, t.TempDir(), tt.cfg)
			addrs := make([]Addr, len(sizes))
			for i, n := range sizes {
				p := payload(uint64(i), n)
				a := mustAppend(t, s, p)
				if a.Len != uint32(n) || a.CRC != crc(p) || a.Off%BlockSize != 0 || a.Off < BlockSize || a.Segment == 0 {
					t.Fatalf("Append(%d bytes) = %v", n, a)
				}
				if i > 0 && a.Segment == addrs[i-1].Segment && a.Off != addrs[i-1].End() {
					t.Errorf("record %d at %d, previous ends at %d", i, a.Off, addrs[i-1].End())
				}
				addrs[i] = a
			}
			if tt.sync {
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range sizes {
				checkRead(t, s, addrs[i], payload(uint64(i), n))
			}
		})
	}
}

func TestAppendAndReadRejectBadInput(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{})
	for _, n := range []int{0, MaxRecordLen + 1} {
		if _, err := s.Append(make([]byte, n)); !errors.Is(err, ErrRecordSize) {
			t.Errorf("Append(%d bytes) = %v, want ErrRecordSize", n, err)
		}
	}
	good := mustAppend(t, s, []byte("record"))
	bad := []struct {
		name string
		a    Addr
		buf  int
	}{
		{"zero", Addr{}, 10},
		{"zero length", Addr{Segment: good.Segment, Off: good.Off, CRC: good.CRC}, 10},
		{"too long", Addr{Segment: good.Segment, Off: good.Off, Len: MaxRecordLen + 1}, MaxRecordLen + 1},
		{"in header", Addr{Segment: good.Segment, Off: 0, Len: 6}, 10},
		{"misaligned", Addr{Segment: good.Segment, Off: good.Off + 1, Len: 5}, 10},
		{"short buffer", good, 5},
	}
	for _, tt := range bad {
		if err := s.Read(tt.a, make([]byte, tt.buf)); !errors.Is(err, ErrBadAddr) {
			t.Errorf("%s: Read(%v) = %v, want ErrBadAddr", tt.name, tt.a, err)
		}
	}
	// Addresses that are well formed but point at nothing are corruption.
	for _, a := range []Addr{
		{Segment: good.Segment + 5, Off: BlockSize, Len: 6},
		{Segment: good.Segment, Off: good.Off + BlockSize, Len: 6},
	} {
		if err := s.Read(a, make([]byte, 6)); !IsCorruption(err) {
			t.Errorf("Read(%v) = %v, want corruption", a, err)
		}
	}
}

func TestRollover(t *testing.T) {
	const recLen = 200 << 10 // 50 blocks, so 5 fit a 1 MiB segment
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer})
	var addrs []Addr
	for i := range 23 {
		addrs = append(addrs, mustAppend(t, s, payload(uint64(i), recLen)))
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	for i, a := range addrs {
		if want := uint64(i/5 + 1); a.Segment != want {
			t.Errorf("record %d in segment %d, want %d", i, a.Segment, want)
		}
		checkRead(t, s, a, payload(uint64(i), recLen))
	}
	segs := s.Segments()
	if len(segs) != 5 {
		t.Fatalf("Segments() = %+v, want 5", segs)
	}
	for i, si := range segs {
		st, err := os.Stat(s.segmentPath(si.Number))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != si.Size || si.Size > BlockSize+MinSegmentSize {
			t.Errorf("segment %d: file %d bytes, Segments says %d, limit %d", si.Number, st.Size(), si.Size, BlockSize+MinSegmentSize)
		}
		if si.Active != (i == len(segs)-1) {
			t.Errorf("segment %d: Active = %v", si.Number, si.Active)
		}
	}
}

func TestDurableAfterReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer}
	s, _, err := Open(OSFS{}, dir, cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	var addrs []Addr
	var data [][]byte
	for i := range 12 {
		p := payload(uint64(i), 150_000)
		addrs = append(addrs, mustAppend(t, s, p))
		data = append(data, p)
		if i%4 == 3 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	highest := addrs[len(addrs)-1].Segment
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for round := range 2 {
		s := mustOpen(t, OSFS{}, dir, cfg)
		for i, a := range addrs {
			checkRead(t, s, a, data[i])
		}
		// Appends continue in a new segment after the highest existing one.
		p := payload(100+uint64(round), 5000)
		a := mustAppend(t, s, p)
		if a.Segment != highest+1 {
			t.Errorf("round %d: first append after reopen in segment %d, want %d", round, a.Segment, highest+1)
		}
		addrs, data = append(addrs, a), append(data, p)
		highest = a.Segment
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCorruptSegmentDetected(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, a Addr)
		want   []string
	}{
		{"flipped data byte", func(t *testing.T, path string, a Addr) {
			flipByte(t, path, int64(a.Off)+1234)
		}, []string{"segment 1", "offset 8192", "crc 0x"}},
		{"flipped header byte", func(t *testing.T, path string, a Addr) {
			flipByte(t, path, 20)
		}, []string{"segment 1", "header crc"}},
		{"truncated", func(t *testing.T, path string, a Addr) {
			if err := os.Truncate(path, int64(a.Off)+100); err != nil {
				t.Fatal(err)
			}
		}, []string{"segment 1", "beyond the segment's end"}},
		{"removed", func(t *testing.T, path string, a Addr) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, []string{"segment 1", "does not exist"}},
		{"segment of another filesystem", func(t *testing.T, path string, a Addr) {
			other := mustOpen(t, OSFS{}, t.TempDir(), Config{})
			mustAppend(t, other, payload(1, 3000))
			mustAppend(t, other, payload(2, 5000))
			if err := other.Close(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(other.segmentPath(1))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"segment 1", "belongs to filesystem"}},
		{"segment header with another number", func(t *testing.T, path string, a Addr) {
			b, _ := os.ReadFile(path)
			le.PutUint64(b[32:], 9)
			le.PutUint32(b[40:], crc(b[:40]))
			os.WriteFile(path, b, 0o644)
		}, []string{"segment 1", "header says number 9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := mustOpen(t, OSFS{}, dir, Config{})
			first := mustAppend(t, s, payload(1, 3000))
			a := mustAppend(t, s, payload(2, 5000))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			tt.damage(t, s.segmentPath(a.Segment), a)
			s = mustOpen(t, OSFS{}, dir, Config{})
			err := s.Read(a, make([]byte, a.Len))
			if !IsCorruption(err) {
				t.Fatalf("Read = %v, want corruption", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tt.name == "flipped data byte" {
				if !strings.Contains(err.Error(), "expected 0x") {
					t.Errorf("error %q does not give both CRCs", err)
				}
				checkRead(t, s, first, payload(1, 3000)) // the neighbour is intact
			}
		})
	}
}

func TestReadRange(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{WriteBuffer: MinWriteBuffer})
	sizes := []int{4096, 100, 70_000, 1, 8192, 300_000, 5000, 400_000, 12}
	var addrs []Addr
	for i, n := range sizes {
		addrs = append(addrs, mustAppend(t, s, payload(uint64(i), n)))
	}
	// With a 1 MiB buffer, the first records are in the file and the last
	// ones still buffered: ranges cross that boundary.
	check := func(t *testing.T, lo, hi int) {
		t.Helper()
		rng := addrs[lo:hi]
		span := rng[len(rng)-1].Off + uint64(rng[len(rng)-1].Len) - rng[0].Off
		buf := make([]byte, span)
		if err := s.ReadRange(rng, buf); err != nil {
			t.Fatalf("ReadRange(%d..%d): %v", lo, hi, err)
		}
		for i, a := range rng {
			rel := a.Off - rng[0].Off
			if string(buf[rel:rel+uint64(a.Len)]) != string(payload(uint64(lo+i), sizes[lo+i])) {
				t.Errorf("ReadRange(%d..%d): record %d differs", lo, hi, lo+i)
			}
		}
	}
	for lo := range sizes {
		for hi := lo + 1; hi <= len(sizes); hi++ {
			check(t, lo, hi)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	check(t, 0, len(sizes))

	span := make([]byte, 2<<20)
	if err := s.ReadRange([]Addr{addrs[0], addrs[2]}, span); !errors.Is(err, ErrBadAddr) {
		t.Errorf("ReadRange of non-adjacent records = %v, want ErrBadAddr", err)
	}
	if err := s.ReadRange(addrs[:2], span[:addrs[1].Off-addrs[0].Off]); !errors.Is(err, ErrBadAddr) {
		t.Errorf("ReadRange with a short buffer = %v, want ErrBadAddr", err)
	}
	wrong := append([]Addr(nil), addrs[:3]...)
	wrong[1].CRC ^= 1
	err := s.ReadRange(wrong, span)
	if !IsCorruption(err) || !strings.Contains(err.Error(), "offset "+strconv.FormatUint(wrong[1].Off, 10)) {
		t.Errorf("ReadRange with a wrong CRC = %v, want corruption at offset %d", err, wrong[1].Off)
	}
}

func TestRemoveSegment(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{SegmentSize: MinSegmentSize})
	var addrs []Addr
	for i := range 6 {
		addrs = append(addrs, mustAppend(t, s, payload(uint64(i), 400_000)))
	}
	// Segments 1 and 2 are full and await Sync; 3 is active.
	if err := s.RemoveSegment(1); !errors.Is(err, ErrSegmentBusy) {
		t.Errorf("RemoveSegment of an unsynced segment = %v, want ErrSegmentBusy", err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSegment(3); !errors.Is(err, ErrSegmentBusy) {
		t.Errorf("RemoveSegment of the active segment = %v, want ErrSegmentBusy", err)
	}
	checkRead(t, s, addrs[0], payload(0, 400_000)) // opens a read handle on segment 1
	if err := s.RemoveSegment(1); err != nil {
		t.Fatalf("RemoveSegment(1): %v", err)
	}
	if _, err := os.Stat(s.segmentPath(1)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("segment file still there: %v", err)
	}
	if err := s.RemoveSegment(1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second RemoveSegment(1) = %v, want ErrNotExist", err)
	}
	if err := s.Read(addrs[0], make([]byte, addrs[0].Len)); !IsCorruption(err) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read in a removed segment = %v", err)
	}
	for _, si := range s.Segments() {
		if si.Number == 1 {
			t.Errorf("Segments() still lists segment 1")
		}
	}
	checkRead(t, s, addrs[2], payload(2, 400_000))
	checkRead(t, s, addrs[5], payload(5, 400_000))
}

// TestConcurrentReadDuringAppend reads records, from the write buffer and
// from files, while one goroutine appends, syncs and rolls segments over.
func TestConcurrentReadDuringAppend(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer})
	const records = 400
	data := make([][]byte, records)
	for i := range data {
		data[i] = payload(uint64(i), 1000+(i*7919)%60_000)
	}

	var mu sync.Mutex
	var published []Addr
	done := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 8)

	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := range records {
			a, err := s.Append(data[i])
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			published = append(published, a)
			mu.Unlock()
			if i%50 == 49 {
				if err := s.Sync(); err != nil {
					errc <- err
					return
				}
			}
		}
	}()
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for k := 0; ; k++ {
				select {
				case <-done:
					return
				default:
				}
				mu.Lock()
				n := len(published)
				i := (k*31 + r*17) % max(n, 1)
				if k%3 == 0 {
					i = n - 1 // the newest: most likely still buffered
				}
				var a Addr
				if n > 0 {
					a = published[i]
				}
				mu.Unlock()
				if n == 0 {
					continue
				}
				if err := s.Read(a, buf); err != nil {
					errc <- err
					return
				}
				if string(buf[:a.Len]) != string(data[i]) {
					errc <- fmt.Errorf("record %d at %v: data differs", i, a)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for i, a := range published {
		checkRead(t, s, a, data[i])
	}
	if len(s.Segments()) < 5 {
		t.Errorf("only %d segments: the test did not exercise rollover", len(s.Segments()))
	}
}

// TestReadHandleLimit reads many segments concurrently through a handle
// cache smaller than their number.
func TestReadHandleLimit(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{SegmentSize: MinSegmentSize})
	s.handles.max = 2
	const n = 8
	var addrs []Addr
	var data [][]byte
	for i := range n {
		p := payload(uint64(i), 700_000)
		addrs = append(addrs, mustAppend(t, s, p)) // one per segment
		data = append(data, p)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 700_000)
			for k := range 40 {
				i := (k*5 + r*3) % n
				if err := s.Read(addrs[i], buf); err != nil {
					errc <- err
					return
				}
				if string(buf) != string(data[i]) {
					errc <- fmt.Errorf("record %d differs", i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if got := s.handles.cached(); got > 2 {
		t.Errorf("%d segment handles cached when idle, limit 2", got)
	}
	if addrs[n-1].Segment != n {
		t.Errorf("last record in segment %d, want %d", addrs[n-1].Segment, n)
	}
}
