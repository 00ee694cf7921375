package fs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/dcache/dcache/backend"
	"github.com/dcache/dcache/cachelayer"
	"github.com/dcache/dcache/internal/device"
	"github.com/dcache/dcache/logarea"
)

// testMount is a real dcache mount on a temporary directory: a backend
// directory, a log file and the engine, served over FUSE.
type testMount struct {
	t       testing.TB
	dir     string // data: backend/, log
	mnt     string
	cfg     cachelayer.Config
	mo      MountOptions
	be      *backend.Store
	dev     device.Device
	wal     *logarea.Log
	eng     *cachelayer.Engine
	fs      *FS
	srv     *fuse.Server
	mounted bool
	// logFaults, when set before mount, sit between the log and its
	// device (see device.NewFaulty).
	logFaults []device.Injector

	// Set before the first mount by newTestMountWith.
	stats  StatsOptions
	record bool // record the log in hook
	hook   *logtest.Hook
}

func testLogger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
	}
	return logrus.NewEntry(l)
}

func newTestMount(t testing.TB, cfg cachelayer.Config) *testMount {
	return newTestMountWith(t, cfg, nil)
}

// newTestMountWith mounts after setup has changed the mount's settings.
func newTestMountWith(t testing.TB, cfg cachelayer.Config, setup func(*testMount)) *testMount {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	tm := &testMount{t: t, dir: t.TempDir(), cfg: cfg, mo: MountOptions{AllowOther: true, WritebackCache: true, FsName: "dcache-test"}}
	tm.mnt = filepath.Join(tm.dir, "mnt")
	if err := os.Mkdir(tm.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(tm)
	}
	tm.mount()
	t.Cleanup(func() {
		if tm.mounted {
			tm.unmount()
		}
	})
	return tm
}

const testLogSize = 256 << 20

func (tm *testMount) mount() {
	t := tm.t
	t.Helper()
	log := testLogger(t)
	if tm.record {
		tm.hook = logtest.NewLocal(log.Logger)
	}
	be, _, err := backend.Open(backend.OSFS{}, filepath.Join(tm.dir, "backend"), backend.Config{SegmentSize: 16 << 20}, log)
	if err != nil {
		t.Fatalf("backend: %v", err)
	}
	logPath := filepath.Join(tm.dir, "log")
	_, statErr := os.Stat(logPath)
	fresh := os.IsNotExist(statErr)
	dev, err := device.OpenFile(logPath, testLogSize, fresh)
	if err != nil {
		t.Fatalf("log device: %v", err)
	}
	if fresh {
		if err := logarea.Format([]device.Device{dev}, be.ID()); err != nil {
			t.Fatalf("format log: %v", err)
		}
	}
	if len(tm.logFaults) > 0 {
		dev = device.NewFaulty(dev, tm.logFaults...)
	}
	wal, err := logarea.Open([]device.Device{dev}, be.ID(), logarea.Config{Compression: true}, log)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	eng, err := cachelayer.Open(tm.cfg, be, cachelayer.NewLogWAL(wal), log)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	f := New(eng, Options{AttrTimeout: time.Second, EntryTimeout: time.Second, NegativeTimeout: time.Second, Stats: tm.stats}, log)
	srv, err := Mount(tm.mnt, f, tm.mo)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	tm.be, tm.dev, tm.wal, tm.eng, tm.fs, tm.srv, tm.mounted = be, dev, wal, eng, f, srv, true
}

// unmount unmounts cleanly: destage, empty log.
func (tm *testMount) unmount() {
	t := tm.t
	t.Helper()
	if err := tm.srv.Unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	tm.srv.Wait()
	if err := tm.eng.Close(); err != nil {
		t.Errorf("engine close: %v", err)
	}
	if err := tm.wal.Close(); err != nil {
		t.Errorf("log close: %v", err)
	}
	tm.dev.Close()
	if err := tm.be.Close(); err != nil {
		t.Errorf("backend close: %v", err)
	}
	tm.mounted = false
}

func (tm *testMount) remount() {
	tm.t.Helper()
	tm.unmount()
	tm.mount()
}

func (tm *testMount) path(p string) string { return filepath.Join(tm.mnt, p) }

// TestKernelDirtyLimit checks that the mount's backing-device limits are
// what MountOptions ask: the kernel's default for a FUSE mount without
// KernelDirty, and about KernelDirty bytes (the kernel keeps the limit as
// a fraction of its dirty limit, so it reads back rounded) with it, the
// strict limit kept either way.
func TestKernelDirtyLimit(t *testing.T) {
	bdi := func(tm *testMount, name string) int64 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(tm.mnt, &st); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/%s", unix.Major(st.Dev), unix.Minor(st.Dev), name))
		if err != nil {
			t.Skipf("no bdi settings: %v", err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	plain := newTestMount(t, testConfig())
	def := bdi(plain, "max_bytes")
	if r := bdi(plain, "max_ratio"); r != 1 {
		t.Logf("the kernel's default max_ratio for FUSE is %d%%, not 1%%", r)
	}

	const want = 256 << 20
	tm := newTestMountWith(t, testConfig(), func(tm *testMount) { tm.mo.KernelDirty = want })
	got := bdi(tm, "max_bytes")
	if bdi(tm, "max_ratio") == 100 {
		// The kernel's whole dirty limit is below want: the mount has all of it.
		t.Logf("dirty limit %d bytes is below %d: max_ratio 100", got, want)
	} else if got < want*99/100 || got > want*101/100 {
		t.Errorf("max_bytes = %d, want about %d (default was %d)", got, want, def)
	}
	if got <= def {
		t.Errorf("max_bytes %d is not above the default %d", got, def)
	}
	if s := bdi(tm, "strict_limit"); s != 1 {
		t.Errorf("strict_limit = %d, want 1", s)
	}
}
