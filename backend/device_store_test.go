package backend

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const testSegSize = 1 << 20

func openDev(t testing.TB, dev Device, opt DeviceOptions) *Store {
	t.Helper()
	s, _, err := OpenDevice("dev", dev, nil, Config{SegmentSize: testSegSize, WriteBuffer: 1 << 20}, opt, testLog(t))
	if err != nil {
		t.Fatalf("OpenDevice: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func devWriteMeta(t testing.TB, s *Store, kind MetaKind, seq uint64, data []byte) {
	t.Helper()
	w, err := s.CreateMeta(kind, seq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		t.Fatalf("write %v %d: %v", kind, seq, err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit %v %d: %v", kind, seq, err)
	}
}

func devReadMeta(t testing.TB, m *MetaFile) []byte {
	t.Helper()
	r, err := m.Open()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %v %d: %v", m.Kind, m.Seq, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return b
}

// loadAll returns the stream of the checkpoint (key 0 is its seq) and of
// each delta, by sequence number.
func loadAll(t testing.TB, s *Store) (cpSeq uint64, streams map[uint64][]byte) {
	t.Helper()
	cp, deltas, err := s.LoadMeta()
	if err != nil {
		t.Fatalf("LoadMeta: %v", err)
	}
	streams = map[uint64][]byte{}
	if cp != nil {
		cpSeq = cp.Seq
		streams[cp.Seq] = devReadMeta(t, cp)
	}
	for _, d := range deltas {
		streams[d.Seq] = devReadMeta(t, d)
	}
	return cpSeq, streams
}

func TestDeviceStoreRoundTripAndRemount(t *testing.T) {
	dev := newFileDevice(t, 32<<20)
	s, created, err := OpenDevice("dev", dev, nil, Config{SegmentSize: testSegSize}, DeviceOptions{}, testLog(t))
	if err != nil || !created {
		t.Fatalf("OpenDevice: created=%v err=%v", created, err)
	}
	id := s.ID()
	var addrs []Addr
	var data [][]byte
	for i := range 40 {
		p := payload(uint64(i), 1000+i*1999)
		addrs = append(addrs, mustAppend(t, s, p))
		data = append(data, p)
		if i%7 == 0 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, a := range addrs {
		checkRead(t, s, a, data[i])
	}
	devWriteMeta(t, s, MetaCheckpoint, 1, payload(100, 300<<10))
	devWriteMeta(t, s, MetaDelta, 2, payload(101, 5000))
	devWriteMeta(t, s, MetaDelta, 3, nil)
	segs := s.Segments()
	if len(segs) < 2 {
		t.Fatalf("want records in several segments, got %v", segs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openDev(t, dev, DeviceOptions{Expect: id})
	for i, a := range addrs {
		checkRead(t, s, a, data[i])
	}
	got := s.Segments()
	for i := range segs {
		segs[i].Active = false
	}
	if !slices.Equal(got, segs) {
		t.Fatalf("segments after reopen %v, before %v", got, segs)
	}
	cpSeq, streams := loadAll(t, s)
	if cpSeq != 1 || len(streams) != 3 || !bytes.Equal(streams[1], payload(100, 300<<10)) ||
		!bytes.Equal(streams[2], payload(101, 5000)) || len(streams[3]) != 0 {
		t.Fatalf("meta after reopen: checkpoint %d, %d streams", cpSeq, len(streams))
	}
	// Appends continue in a new segment; a removed segment stays removed.
	a := mustAppend(t, s, []byte("after reopen"))
	if a.Segment <= segs[len(segs)-1].Number {
		t.Fatalf("append after reopen went to segment %d", a.Segment)
	}
	if err := s.RemoveSegment(segs[0].Number); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDev(t, dev, DeviceOptions{Expect: id})
	checkRead(t, s, a, []byte("after reopen"))
	if err := s.Read(addrs[0], make([]byte, len(data[0]))); err == nil {
		t.Fatalf("read of a removed segment succeeded")
	}
	checkRead(t, s, addrs[len(addrs)-1], data[len(data)-1])
}

func TestDeviceStoreRefusesTouchingNothing(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dev fileDevice) DeviceOptions
		want    error
		msg     string
	}{
		{"ext4", func(t *testing.T, dev fileDevice) DeviceOptions {
			dev.WriteAt([]byte{0x53, 0xef}, 1080)
			dev.WriteAt(payload(1, 8192), 1<<20)
			return DeviceOptions{}
		}, ErrForeign, "ext2/3/4"},
		{"stray bytes", func(t *testing.T, dev fileDevice) DeviceOptions {
			dev.WriteAt([]byte{7}, 40000)
			return DeviceOptions{}
		}, ErrForeign, "offset 40000"},
		{"other uuid", func(t *testing.T, dev fileDevice) DeviceOptions {
			s, _, err := OpenDevice("dev", dev, nil, Config{SegmentSize: testSegSize}, DeviceOptions{}, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			mustAppend(t, s, []byte("data"))
			devWriteMeta(t, s, MetaCheckpoint, 1, []byte("meta"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return DeviceOptions{Expect: [16]byte{0xde, 0xad}}
		}, ErrOtherFS, "format it explicitly"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := newFileDevice(t, 16<<20)
			opt := tc.prepare(t, dev)
			before := fileSum(t, dev.Name())
			_, _, err := OpenDevice("dev", dev, nil, Config{SegmentSize: testSegSize}, opt, testLog(t))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want %v naming %q", err, tc.want, tc.msg)
			}
			if after := fileSum(t, dev.Name()); after != before {
				t.Fatalf("the refused device was modified")
			}
		})
	}
}

func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestDeviceFileLockAndFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(path, []byte("XFSB"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 16<<20); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDeviceFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenDevice(path, d, d, Config{SegmentSize: testSegSize}, DeviceOptions{}, testLog(t)); !errors.Is(err, ErrForeign) {
		t.Fatalf("open of XFS content: %v", err)
	}
	if _, err := OpenDeviceFile(path); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	d.Close()
	id, err := FormatDeviceFile(path, testSegSize)
	if err != nil {
		t.Fatal(err)
	}
	d, err = OpenDeviceFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, created, err := OpenDevice(path, d, d, Config{}, DeviceOptions{Expect: id}, testLog(t))
	if err != nil || created || s.SegmentSize() != testSegSize {
		t.Fatalf("open after format: created=%v err=%v", created, err)
	}
	total, free, _, err := s.StatFS()
	if err != nil || total == 0 || free != total {
		t.Fatalf("StatFS %d %d %v", total, free, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDeviceFile(path); err != nil {
		t.Fatalf("lock not released by Close: %v", err)
	}
}

func TestDeviceSlotsFull(t *testing.T) {
	dev := newFileDevice(t, 8<<20) // 4 MiB of meta ring, 3 slots of 1 MiB
	s := openDev(t, dev, DeviceOptions{})
	var err error
	for i := 0; err == nil && i < 10; i++ {
		_, err = s.Append(make([]byte, MaxRecordLen))
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append past the last slot: %v, want ENOSPC", err)
	}
}

// TestDeviceMetaRingWraps writes checkpoints and deltas through a ring of
// 4 MiB many times over, writing a checkpoint whenever MetaRoom says the
// live records and one more checkpoint would not fit, as the engine does.
func TestDeviceMetaRingWraps(t *testing.T) {
	dev := newFileDevice(t, 16<<20)
	s := openDev(t, dev, DeviceOptions{})
	id := s.ID()
	want := map[uint64][]byte{}
	var cpSeq uint64
	var cpSize, deltaSize int64
	checkpoints := 0
	for seq := uint64(1); seq <= 90; seq++ {
		free, limited := s.MetaRoom()
		if !limited {
			t.Fatal("a device's meta room is limited")
		}
		full := cpSeq == 0 || free < 2*(cpSize+deltaSize)+(1<<20)
		if full {
			p := payload(seq, 700<<10+int(seq))
			devWriteMeta(t, s, MetaCheckpoint, seq, p)
			if err := s.RemoveMetaBefore(seq); err != nil {
				t.Fatal(err)
			}
			want = map[uint64][]byte{seq: p}
			cpSeq, cpSize, deltaSize = seq, int64(len(p)), 0
			checkpoints++
		} else {
			p := payload(seq, 50<<10+int(seq)*100)
			devWriteMeta(t, s, MetaDelta, seq, p)
			want[seq] = p
			deltaSize += int64(len(p))
		}
		if seq%25 == 0 {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openDev(t, dev, DeviceOptions{Expect: id})
		}
		if seq%5 != 0 {
			continue
		}
		got, streams := loadAll(t, s)
		if got != cpSeq || len(streams) != len(want) {
			t.Fatalf("seq %d: checkpoint %d, %d streams; want %d, %d", seq, got, len(streams), cpSeq, len(want))
		}
		for q, p := range want {
			if !bytes.Equal(streams[q], p) {
				t.Fatalf("seq %d: stream %d differs", seq, q)
			}
		}
	}
	if checkpoints < 5 || s.ring.head < 3*s.ring.size {
		t.Fatalf("%d checkpoints, ring head %d of size %d: the ring did not wrap enough", checkpoints, s.ring.head, s.ring.size)
	}
	// Without a checkpoint the ring fills, and the failed record leaves
	// the live ones intact.
	var err error
	seq := uint64(91)
	for ; err == nil; seq++ {
		var w MetaWriter
		if w, err = s.CreateMeta(MetaDelta, seq); err != nil {
			t.Fatal(err)
		}
		if _, err = w.Write(payload(seq, 600<<10)); err == nil {
			err = w.Commit()
		} else {
			w.Abort()
		}
		if err == nil {
			want[seq] = payload(seq, 600<<10)
		}
	}
	if !errors.Is(err, ErrMetaFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing past the ring: %v, want ErrMetaFull", err)
	}
	s.Close()
	s = openDev(t, dev, DeviceOptions{Expect: id})
	_, streams := loadAll(t, s)
	if len(streams) != len(want) {
		t.Fatalf("after a full ring: %d streams, want %d", len(streams), len(want))
	}
	// The refused delta left room for a checkpoint of everything live
	// and the delta together.
	var all []byte
	for _, p := range streams {
		all = append(all, p...)
	}
	all = append(all, payload(seq, 600<<10)...)
	seq--
	devWriteMeta(t, s, MetaCheckpoint, seq, all)
	if err := s.RemoveMetaBefore(seq); err != nil {
		t.Fatal(err)
	}
	if got, streams := loadAll(t, s); got != seq || len(streams) != 1 || !bytes.Equal(streams[seq], all) {
		t.Fatalf("checkpoint after a refused delta: %d, %d streams", got, len(streams))
	}
}

// crashDev is a device in memory that loses what was not synced when it
// crashes: each write since the last Sync survives whole, not at all, or
// torn at a 512-byte boundary.
type crashDev struct {
	mu      sync.Mutex
	data    []byte // what reads see
	durable []byte // what survives a crash
	pending []pendingWrite
}

type pendingWrite struct {
	off int64
	p   []byte
}

func newCrashDev(size int64) *crashDev {
	return &crashDev{data: make([]byte, size), durable: make([]byte, size)}
}

func (d *crashDev) Size() int64 { return int64(len(d.data)) }

func (d *crashDev) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *crashDev) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off+int64(len(p)) > int64(len(d.data)) {
		return 0, fmt.Errorf("write past the device end: %w", syscall.ENOSPC)
	}
	copy(d.data[off:], p)
	d.pending = append(d.pending, pendingWrite{off, slices.Clone(p)})
	return len(p), nil
}

func (d *crashDev) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.pending {
		copy(d.durable[w.off:], w.p)
	}
	d.pending = nil
	return nil
}

func (d *crashDev) crash(rng *rand.Rand) *crashDev {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := newCrashDev(int64(len(d.data)))
	copy(out.data, d.durable)
	for _, w := range d.pending {
		for s := 0; s < len(w.p); s += 512 {
			if rng.IntN(2) == 0 {
				copy(out.data[w.off+int64(s):], w.p[s:min(s+512, len(w.p))])
			}
		}
	}
	copy(out.durable, out.data)
	return out
}

// TestDeviceCrashRecovery runs appends, syncs, meta records and segment
// removals on a device that crashes at a random point, losing or tearing
// unsynced writes, and checks that everything synced or committed before
// the crash is there after a reopen.
func TestDeviceCrashRecovery(t *testing.T) {
	var checked, removed, metas, full int
	for round := range 7 {
		rng := rand.New(rand.NewPCG(uint64(round), 42))
		dev := newCrashDev(12 << 20)
		s, _, err := OpenDevice("dev", dev, nil, Config{SegmentSize: testSegSize, WriteBuffer: 1 << 20}, DeviceOptions{}, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		id := s.ID()
		durable := map[Addr][]byte{}
		var pendingAddrs []Addr
		pendingData := map[Addr][]byte{}
		metaWant := map[uint64][]byte{}
		var seq, cpSeq uint64
		steps := 60 + rng.IntN(60)
		for step := range steps {
			switch op := rng.IntN(11); {
			case op < 6:
				p := payload(uint64(round*1000+step), 1+rng.IntN(100<<10))
				a, err := s.Append(p)
				if errors.Is(err, syscall.ENOSPC) {
					pendingAddrs = nil // voided by the failed Append
					full++
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				pendingAddrs = append(pendingAddrs, a)
				pendingData[a] = p
			case op < 8:
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, a := range pendingAddrs {
					durable[a] = pendingData[a]
				}
				pendingAddrs = nil
			case op < 9:
				seq++
				p := payload(uint64(seq), rng.IntN(100<<10))
				kind := MetaDelta
				if rng.IntN(3) == 0 {
					kind = MetaCheckpoint
				}
				devWriteMeta(t, s, kind, seq, p)
				if kind == MetaCheckpoint {
					if err := s.RemoveMetaBefore(seq); err != nil {
						t.Fatal(err)
					}
					metaWant = map[uint64][]byte{}
					cpSeq = seq
				}
				metaWant[seq] = p
			default:
				// Remove a segment that is not being written.
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
				for _, a := range pendingAddrs {
					durable[a] = pendingData[a]
				}
				pendingAddrs = nil
				segs := s.Segments()
				if len(segs) == 0 {
					continue
				}
				seg := segs[rng.IntN(len(segs))]
				if seg.Active {
					continue
				}
				n := seg.Number
				if err := s.RemoveSegment(n); errors.Is(err, ErrSegmentBusy) {
					continue
				} else if err != nil {
					t.Fatal(err)
				}
				for a := range durable {
					if a.Segment == n {
						delete(durable, a)
					}
				}
				removed++
			}
		}
		crashed := dev.crash(rng)
		s.Close()
		s2, _, err := OpenDevice("dev", crashed, nil, Config{SegmentSize: testSegSize}, DeviceOptions{Expect: id}, testLog(t))
		if err != nil {
			t.Fatalf("round %d: reopen after crash: %v", round, err)
		}
		for a, p := range durable {
			checkRead(t, s2, a, p)
		}
		checked += len(durable)
		metas += len(metaWant)
		got, streams := loadAll(t, s2)
		if got != cpSeq || len(streams) != len(metaWant) {
			t.Fatalf("round %d: checkpoint %d with %d streams, want %d with %d", round, got, len(streams), cpSeq, len(metaWant))
		}
		for q, p := range metaWant {
			if !bytes.Equal(streams[q], p) {
				t.Fatalf("round %d: meta %d differs", round, q)
			}
		}
		// The store works on: a new segment is written and read back.
		a := mustAppend(t, s2, []byte("after the crash"))
		if err := s2.Sync(); err != nil {
			t.Fatal(err)
		}
		checkRead(t, s2, a, []byte("after the crash"))
		s2.Close()
	}
	if checked < 50 || removed < 8 || metas < 5 {
		t.Fatalf("too little exercised: %d records checked, %d segments removed, %d meta records", checked, removed, metas)
	}
	t.Logf("%d records checked, %d segments removed, %d meta records, %d appends refused for lack of slots", checked, removed, metas, full)
}
