package cachelayer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dcache/dcache/backend"
	"github.com/dcache/dcache/internal/device"
	"github.com/dcache/dcache/logarea"
)

// BenchmarkRecoverFullLog measures the mount after a crash with a full log:
// an engine writes random overwrites of a 64 MiB file through its normal
// write path with destage stopped, until the log (a preallocated file,
// DCACHE_BENCH_LOG_SIZE bytes, default 1 GiB) has no room for another
// write; everything is fsynced and the process state dropped as kill -9
// would (no destage, no clean close of the log), and the log file is
// evicted from the page cache. The timed part is what a mount does: open
// the log (check and scan every replica), then open the engine (replay
// every record, destage what the replay dirtied, persist the metadata).
//
// Metrics: log-MB/s (log bytes recovered per second of mount), s/mount, and
// the log scan and the engine's replay+destage separately.
//
//	go test -run '^$' -bench RecoverFullLog -benchtime 1x ./cachelayer/
func BenchmarkRecoverFullLog(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("DCACHE_BENCH_LOG_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("DCACHE_BENCH_LOG_SIZE: %v", err)
		}
		size = n
	}
	for _, bs := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("write=%dKiB", bs>>10), func(b *testing.B) { benchRecoverFullLog(b, size, bs) })
	}
}

func benchRecoverFullLog(b *testing.B, logSize int64, bs int) {
	const region = 64 << 20
	dir := b.TempDir()
	logPath := filepath.Join(dir, "log")
	beDir := filepath.Join(dir, "backend")
	cfg := Config{CacheSize: 256 << 20, DirtyBytes: 256 << 20, MaxDirtyAge: time.Hour}
	lcfg := logarea.Config{Compression: true}
	rng := rand.New(rand.NewPCG(1, uint64(bs)))
	data := make([]byte, region+bs) // incompressible, as most file data
	for i := 0; i+8 <= len(data); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	want := make([]byte, region)
	var totalLog, totalScan, totalEngine time.Duration
	var logBytes int64

	openBackend := func() *backend.Store {
		be, _, err := backend.Open(backend.OSFS{}, beDir, backend.Config{}, testLog(b))
		if err != nil {
			b.Fatalf("backend: %v", err)
		}
		return be
	}
	b.StopTimer()
	for iter := 0; iter < b.N; iter++ {
		os.RemoveAll(dir)
		be := openBackend()
		dev, err := device.OpenFile(logPath, logSize, true)
		if err != nil {
			b.Fatal(err)
		}
		if err := logarea.Format([]device.Device{dev}, be.ID()); err != nil {
			b.Fatal(err)
		}
		l, err := logarea.Open([]device.Device{dev}, be.ID(), lcfg, testLog(b))
		if err != nil {
			b.Fatal(err)
		}
		e, err := Open(cfg, be, NewLogWAL(l), testLog(b))
		if err != nil {
			b.Fatal(err)
		}
		close(e.stop) // no destage from here on
		e.done.Wait()
		f := mustCreate(b, e, RootIno, "f", syscall.S_IFREG|0o644)
		mustWrite(b, e, f.Ino, 0, data[:region])
		copy(want, data[:region])
		room := int64(bs + 4096)
		for n := 0; l.Stats().FreeBytes >= room; n++ {
			off := rng.IntN(region/bs) * bs
			src := rng.IntN(region)
			mustWrite(b, e, f.Ino, uint64(off), data[src:src+bs])
			copy(want[off:], data[src:src+bs])
		}
		if err := e.Sync(bg); err != nil {
			b.Fatal(err)
		}
		st := l.Stats()
		logBytes = st.UsedBytes
		// kill -9: the process state is gone, the log is not closed.
		e.mu.Lock()
		e.closed = true
		e.pool.close()
		e.mu.Unlock()
		dev.Close()
		if err := be.Close(); err != nil {
			b.Fatal(err)
		}
		evict(b, logPath)

		b.StartTimer()
		t0 := time.Now()
		be = openBackend()
		dev, err = device.OpenFile(logPath, logSize, false)
		if err != nil {
			b.Fatal(err)
		}
		l, err = logarea.Open([]device.Device{dev}, be.ID(), lcfg, testLog(b))
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		e, err = Open(cfg, be, NewLogWAL(l), testLog(b))
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		b.StopTimer()
		totalLog += t2.Sub(t0)
		totalScan += t1.Sub(t0)
		totalEngine += t2.Sub(t1)

		g, err := e.Lookup(RootIno, "f")
		if err != nil {
			b.Fatal(err)
		}
		if got := readAll(b, e, g.Ino); !bytes.Equal(got, want) {
			b.Fatalf("recovered file differs from what was written")
		}
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
		l.Close()
		dev.Close()
		be.Close()
	}
	n := float64(b.N)
	b.ReportMetric(float64(logBytes)/1e6/(totalLog.Seconds()/n), "log-MB/s")
	b.ReportMetric(totalLog.Seconds()/n, "s/mount")
	b.ReportMetric(totalScan.Seconds()/n, "s-logopen")
	b.ReportMetric(totalEngine.Seconds()/n, "s-replay+destage")
	b.ReportMetric(float64(logBytes)/(1<<20), "log-MiB")
	b.ReportMetric(0, "ns/op")
}

// evict drops path's pages from the page cache, as after a reboot.
func evict(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatalf("fadvise %s: %v", path, err)
	}
}
