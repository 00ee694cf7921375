package device

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const testSize = 64 << 10

// implementations returns a fresh device of each kind.
func implementations(t *testing.T) map[string]Device {
	t.Helper()
	dir := t.TempDir()
	f, err := OpenFile(filepath.Join(dir, "file"), testSize, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenMmap(filepath.Join(dir, "mmap"), testSize, true)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Device{
		"mem":       NewMem(testSize),
		"crashable": NewCrashable(testSize),
		"file":      f,
		"mmap":      m,
		"faulty":    NewFaulty(NewMem(testSize)),
	}
}

func TestDeviceContract(t *testing.T) {
	for name, d := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			if d.Size() != testSize {
				t.Fatalf("Size = %d, want %d", d.Size(), testSize)
			}
			if d.Name() == "" {
				t.Fatal("empty Name")
			}
			zero := make([]byte, 4096)
			got := make([]byte, 4096)
			if _, err := d.ReadAt(got, testSize-4096); err != nil || !bytes.Equal(got, zero) {
				t.Fatalf("fresh device not zero: %v", err)
			}
			data := bytes.Repeat([]byte("dcache"), 1000)
			if n, err := d.WriteAt(data, 1000); err != nil || n != len(data) {
				t.Fatalf("WriteAt = %d, %v", n, err)
			}
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
			got = make([]byte, len(data))
			if n, err := d.ReadAt(got, 1000); err != nil || n != len(data) || !bytes.Equal(got, data) {
				t.Fatalf("ReadAt = %d, %v, equal %v", n, err, bytes.Equal(got, data))
			}
			for _, tc := range []struct {
				off int64
				n   int
			}{{-1, 1}, {testSize, 1}, {testSize - 1, 2}, {0, testSize + 1}} {
				if _, err := d.WriteAt(make([]byte, tc.n), tc.off); !errors.Is(err, ErrOutOfRange) {
					t.Errorf("WriteAt(%d bytes at %d) = %v, want ErrOutOfRange", tc.n, tc.off, err)
				}
				if _, err := d.ReadAt(make([]byte, tc.n), tc.off); !errors.Is(err, ErrOutOfRange) {
					t.Errorf("ReadAt(%d bytes at %d) = %v, want ErrOutOfRange", tc.n, tc.off, err)
				}
			}
			if d.Size() != testSize {
				t.Fatalf("Size changed to %d", d.Size())
			}
			if KindOf(d) == "unknown" {
				t.Errorf("KindOf = unknown")
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteAt(data, 0); !errors.Is(err, ErrClosed) {
				t.Errorf("WriteAt after Close = %v, want ErrClosed", err)
			}
			if _, err := d.ReadAt(data, 0); !errors.Is(err, ErrClosed) {
				t.Errorf("ReadAt after Close = %v, want ErrClosed", err)
			}
			if err := d.Sync(); !errors.Is(err, ErrClosed) {
				t.Errorf("Sync after Close = %v, want ErrClosed", err)
			}
		})
	}
}

// TestConcurrent runs writers, readers and syncs at once; -race checks the
// implementations' locking, and each writer's region must read back intact.
func TestConcurrent(t *testing.T) {
	for name, d := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			defer d.Close()
			const workers = 4
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					region := int64(w) * (testSize / workers)
					buf := bytes.Repeat([]byte{byte(w + 1)}, 1000)
					got := make([]byte, len(buf))
					for i := range 50 {
						off := region + int64(i%10)*1000
						if _, err := d.WriteAt(buf, off); err != nil {
							t.Error(err)
							return
						}
						if i%7 == 0 {
							if err := d.Sync(); err != nil {
								t.Error(err)
								return
							}
						}
						if _, err := d.ReadAt(got, off); err != nil || !bytes.Equal(got, buf) {
							t.Errorf("worker %d read back mismatch: %v", w, err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

func TestFileCreatePreallocatesAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if _, err := OpenFile(path, 1<<20, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("open missing without create = %v, want ErrNotExist", err)
	}
	if _, err := OpenFile(path, 0, true); !errors.Is(err, ErrInvalidSize) {
		t.Fatalf("create with size 0 = %v, want ErrInvalidSize", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed create left a file behind: %v", err)
	}
	d, err := OpenFile(path, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	if KindOf(d) != "file" {
		t.Errorf("kind %q", KindOf(d))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 1<<20 || st.Blocks*512 < 1<<20 {
		t.Errorf("file size %d, allocated %d bytes: want 1 MiB preallocated", st.Size, st.Blocks*512)
	}
	if _, err := d.WriteAt([]byte("hello"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	// An existing file is opened as it is, whatever size and create say.
	d, err = OpenFile(path, 4096, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 1<<20 {
		t.Errorf("reopened size %d", d.Size())
	}
	got := make([]byte, 5)
	if _, err := d.ReadAt(got, 4096); err != nil || string(got) != "hello" {
		t.Errorf("reopened contents %q, %v", got, err)
	}
}

func TestFileRejectsOtherKinds(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenFile(dir, 4096, true); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("open directory = %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(empty, 4096, false); !errors.Is(err, ErrInvalidSize) {
		t.Errorf("open empty file = %v, want ErrInvalidSize", err)
	}
	d, err := OpenFile(empty, 8192, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 8192 {
		t.Errorf("empty file with create: size %d", d.Size())
	}
}

// TestZeroFill covers the fallback used where fallocate is unsupported.
func TestZeroFill(t *testing.T) {
	m := NewMem(3 << 20)
	if _, err := m.WriteAt(bytes.Repeat([]byte{0xff}, 3<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := zeroFill(m, 100, 2<<20+5); err != nil {
		t.Fatal(err)
	}
	b := m.Bytes()
	for i, c := range b {
		want := byte(0xff)
		if i >= 100 && i < 100+2<<20+5 {
			want = 0
		}
		if c != want {
			t.Fatalf("byte %d = %#x, want %#x", i, c, want)
		}
	}
}

// TestBlockDevice attaches a loop device (root only) and checks that OpenFile
// takes its size from the device and never resizes it.
func TestBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })

	if _, err := OpenFile(loop, 4<<20, true); !errors.Is(err, ErrInvalidSize) {
		t.Errorf("open %s asking for more than its size = %v, want ErrInvalidSize", loop, err)
	}
	d, err := OpenFile(loop, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if KindOf(d) != "block" || d.Size() != 2<<20 {
		t.Fatalf("kind %q size %d, want block 2 MiB", KindOf(d), d.Size())
	}
	if _, err := d.WriteAt([]byte("block"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := d.ReadAt(got, 1<<20); err != nil || string(got) != "block" {
		t.Fatalf("read back %q, %v", got, err)
	}
	if _, err := d.WriteAt([]byte("x"), 2<<20); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("write past the end = %v", err)
	}
}

func TestMmapPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pmem")
	d, err := OpenMmap(path, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	if KindOf(d) != "mmap" {
		t.Errorf("kind %q", KindOf(d))
	}
	// Many scattered writes exceed maxDirtySpans and exercise the merge.
	for i := range 200 {
		if _, err := d.WriteAt([]byte{byte(i)}, int64(i)*5000); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte("tail"), 1<<20-4); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil { // Close syncs what is dirty
		t.Fatal(err)
	}
	if err := d.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if raw[i*5000] != byte(i) {
			t.Fatalf("byte at %d = %d, want %d", i*5000, raw[i*5000], i)
		}
	}
	if string(raw[1<<20-4:]) != "tail" {
		t.Errorf("tail %q", raw[1<<20-4:])
	}
	d, err = OpenMmap(path, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, 4)
	if _, err := d.ReadAt(got, 1<<20-4); err != nil || string(got) != "tail" {
		t.Errorf("remapped read %q, %v", got, err)
	}
}

func TestCrashKeepsSyncedAndTearsUnsynced(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sawLost, sawKept, sawTorn := false, false, false
	for round := range 200 {
		c := NewCrashable(16 << 10)
		synced := bytes.Repeat([]byte{0xAA}, 3000)
		if _, err := c.WriteAt(synced, 100); err != nil {
			t.Fatal(err)
		}
		if err := c.Sync(); err != nil {
			t.Fatal(err)
		}
		// An unsynced write over sectors 8..15 (4096..8191), not aligned.
		unsynced := bytes.Repeat([]byte{0xBB}, 3500)
		if _, err := c.WriteAt(unsynced, 4200); err != nil {
			t.Fatal(err)
		}
		if c.Unsynced() != 1 {
			t.Fatalf("Unsynced = %d", c.Unsynced())
		}
		img := c.Crash(rng).Bytes()
		if !bytes.Equal(img[100:3100], synced) {
			t.Fatalf("round %d: synced data lost", round)
		}
		kept := 0
		// Each sector piece of the unsynced write is all new or all old.
		for start := 4200; start < 7700; {
			end := min((start/SectorSize+1)*SectorSize, 7700)
			piece := img[start:end]
			switch {
			case bytes.Equal(piece, unsynced[:end-start]):
				kept++
			case bytes.Equal(piece, make([]byte, end-start)):
			default:
				t.Fatalf("round %d: sector piece [%d,%d) half written", round, start, end)
			}
			start = end
		}
		switch kept {
		case 0:
			sawLost = true
		case 8:
			sawKept = true
		default:
			sawTorn = true
		}
		if !bytes.Equal(c.Bytes()[4200:7700], unsynced) {
			t.Fatal("Crash changed the original device")
		}
	}
	if !sawLost || !sawKept || !sawTorn {
		t.Errorf("crash outcomes lost=%v kept=%v torn=%v: want all three", sawLost, sawKept, sawTorn)
	}
}

func TestFaultyInjectors(t *testing.T) {
	buf := make([]byte, 100)
	tests := []struct {
		name  string
		inj   func() []Injector
		check func(t *testing.T, f *Faulty)
	}{
		{
			name: "fail writes after n",
			inj:  func() []Injector { return []Injector{FailAfter(OpWrite, 2, syscall.EIO)} },
			check: func(t *testing.T, f *Faulty) {
				for i := range 4 {
					_, err := f.WriteAt(buf, 0)
					if (i < 2) != (err == nil) || (err != nil && !errors.Is(err, syscall.EIO)) {
						t.Errorf("write %d: %v", i, err)
					}
				}
				if _, err := f.ReadAt(buf, 0); err != nil {
					t.Errorf("read failed: %v", err)
				}
				if err := f.Sync(); err != nil {
					t.Errorf("sync failed: %v", err)
				}
			},
		},
		{
			name: "fail syncs with ENOSPC",
			inj:  func() []Injector { return []Injector{FailAfter(OpSync, 0, syscall.ENOSPC)} },
			check: func(t *testing.T, f *Faulty) {
				if err := f.Sync(); !errors.Is(err, syscall.ENOSPC) {
					t.Errorf("sync = %v", err)
				}
				if _, err := f.WriteAt(buf, 0); err != nil {
					t.Errorf("write = %v", err)
				}
			},
		},
		{
			name: "vanish toggled at run time",
			inj:  func() []Injector { return []Injector{Vanish()} },
			check: func(t *testing.T, f *Faulty) {
				sw := f.injectors[0].(*Switch)
				if _, err := f.WriteAt(buf, 0); err != nil {
					t.Fatal(err)
				}
				sw.Set(true)
				if !sw.On() {
					t.Fatal("switch not on")
				}
				_, rerr := f.ReadAt(buf, 0)
				_, werr := f.WriteAt(buf, 0)
				serr := f.Sync()
				for _, err := range []error{rerr, werr, serr} {
					if !errors.Is(err, ErrVanished) {
						t.Errorf("op on vanished device = %v", err)
					}
				}
				sw.Set(false)
				if err := f.Sync(); err != nil {
					t.Errorf("sync after switch off = %v", err)
				}
			},
		},
		{
			name: "short write stores a prefix",
			inj:  func() []Injector { return []Injector{ShortWriteAfter(1)} },
			check: func(t *testing.T, f *Faulty) {
				if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 100), 0); err != nil {
					t.Fatal(err)
				}
				n, err := f.WriteAt(bytes.Repeat([]byte{2}, 100), 0)
				if n != 50 || !errors.Is(err, io.ErrShortWrite) {
					t.Fatalf("short write = %d, %v", n, err)
				}
				got := make([]byte, 100)
				f.ReadAt(got, 0)
				if !bytes.Equal(got[:50], bytes.Repeat([]byte{2}, 50)) || !bytes.Equal(got[50:], bytes.Repeat([]byte{1}, 50)) {
					t.Errorf("contents after short write: %v", got)
				}
			},
		},
		{
			name: "slow and failing compose",
			inj: func() []Injector {
				return []Injector{Slow(OpSync, time.Millisecond), FailAfter(OpSync, 1, syscall.EIO), FailAfter(OpSync, 0, syscall.ENOSPC)}
			},
			check: func(t *testing.T, f *Faulty) {
				// The first injector (in list order) that fails decides:
				// the first sync passes the EIO injector and meets ENOSPC,
				// the second meets EIO first.
				if err := f.Sync(); !errors.Is(err, syscall.ENOSPC) {
					t.Errorf("first sync = %v", err)
				}
				if err := f.Sync(); !errors.Is(err, syscall.EIO) {
					t.Errorf("second sync = %v, want EIO (earlier injector)", err)
				}
				_, _, syncs := f.Counts()
				if syncs != 2 {
					t.Errorf("sync count %d", syncs)
				}
			},
		},
		{
			name: "close error still closes",
			inj:  func() []Injector { return []Injector{FailAfter(OpClose, 0, syscall.EIO)} },
			check: func(t *testing.T, f *Faulty) {
				if err := f.Close(); !errors.Is(err, syscall.EIO) {
					t.Errorf("close = %v", err)
				}
				if _, err := f.Inner().ReadAt(buf, 0); !errors.Is(err, ErrClosed) {
					t.Errorf("inner still open: %v", err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := NewFaulty(NewMem(4096), tc.inj()...)
			if f.Size() != 4096 || f.Name() != "mem" || f.Kind() != "mem" {
				t.Fatalf("pass-through: size %d name %q kind %q", f.Size(), f.Name(), f.Kind())
			}
			tc.check(t, f)
		})
	}
}

func TestOpKindString(t *testing.T) {
	for k, want := range map[OpKind]string{0: "none", OpRead: "read", OpWrite | OpSync: "write|sync", OpAll: "read|write|sync|close"} {
		if k.String() != want {
			t.Errorf("%d: %q, want %q", k, k.String(), want)
		}
	}
}

// TestFileWriteBehind: a File starts writeback every WriteBehind bytes
// (the count restarts each time) and that changes nothing that is read.
func TestFileWriteBehind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	d, err := OpenFile(path, 3*WriteBehind, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f := d.(*File)
	chunk := make([]byte, 1<<20)
	for i := range 2*WriteBehind/len(chunk) + 3 {
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		if _, err := f.WriteAt(chunk, int64(i*len(chunk))); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.unkicked.Load(); got != 3<<20 {
		t.Errorf("%d bytes counted since the last writeback, want 3 MiB (two kicks, three writes since)", got)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range 2*WriteBehind/len(chunk) + 3 {
		if _, err := f.ReadAt(chunk, int64(i*len(chunk))); err != nil {
			t.Fatal(err)
		}
		for j := range chunk {
			if chunk[j] != byte(i+j) {
				t.Fatalf("MiB %d byte %d: %d, want %d", i, j, chunk[j], byte(i+j))
			}
		}
	}
}
