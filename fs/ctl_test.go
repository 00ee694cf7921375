package fs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/cachelayer"
	"github.com/dcache/dcache/internal/device"
)

// statsConfig keeps data dirty until asked: no age-driven destage.
func statsConfig() cachelayer.Config {
	return cachelayer.Config{CacheSize: 64 << 20, MaxDirtyAge: time.Hour}
}

func (tm *testMount) report() Report {
	tm.t.Helper()
	b, err := os.ReadFile(tm.path(".dcache/stats.json"))
	if err != nil {
		tm.t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		tm.t.Fatalf("stats.json: %v\n%s", err, b)
	}
	return r
}

// ctlWrite writes s to a control file as a shell would (open with
// O_TRUNC, one write).
func (tm *testMount) ctlWrite(name, s string) error {
	return os.WriteFile(tm.path(".dcache/"+name), []byte(s+"\n"), 0o644)
}

func (tm *testMount) object(t *testing.T, path string) string {
	t.Helper()
	ino := lstat(t, tm.path(path)).Ino
	b, err := os.ReadFile(tm.path(fmt.Sprintf(".dcache/objects/%d", ino)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// field returns "key: value"'s value in an objects/INO text.
func field(t *testing.T, text, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `: (.*)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no %s in:\n%s", key, text)
	}
	return m[1]
}

// mustWriteSynced creates path with data and fsyncs it.
func mustWriteSynced(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := writeSynced(path, data); err != nil {
		t.Fatal(err)
	}
}

// TestStatsAfterWorkload: after a known workload the figures moved as
// they must, flush drains the dirty bytes into the backend, and an
// object's file shows where its bytes are before and after.
func TestStatsAfterWorkload(t *testing.T) {
	if !statsOn {
		t.Skip("request statistics are compiled out (-tags nostats)")
	}
	tm := newTestMount(t, statsConfig())
	before := tm.report()

	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	for i := 0; i < 3; i++ {
		mustWriteSynced(t, tm.path(fmt.Sprintf("d/f%d", i)), data)
	}
	mid := tm.report()
	ops := mid.Windows.SinceMount.Operations
	if got := ops["create"].Count - before.Windows.SinceMount.Operations["create"].Count; got != 3 {
		t.Errorf("create count rose by %d, want 3", got)
	}
	if got := ops["write"].Bytes; got < 3<<20 {
		t.Errorf("write bytes %d, want at least 3 MiB", got)
	}
	if ops["write"].LatencyMaxUs <= 0 || ops["write"].LatencyP50Us <= 0 || ops["write"].LatencyP99Us < ops["write"].LatencyP50Us {
		t.Errorf("write latencies p50 %v p99 %v max %v", ops["write"].LatencyP50Us, ops["write"].LatencyP99Us, ops["write"].LatencyMaxUs)
	}
	if got := mid.Cache.BytesWrittenTotal - before.Cache.BytesWrittenTotal; got != 3<<20 {
		t.Errorf("cache bytes written rose by %d, want %d", got, 3<<20)
	}
	if mid.Cache.DirtyBytes < 3<<20 || mid.Cache.UsedBytes < mid.Cache.DirtyBytes {
		t.Errorf("dirty %d used %d after writing 3 MiB", mid.Cache.DirtyBytes, mid.Cache.UsedBytes)
	}
	if len(mid.Log.Replicas) != 1 || mid.Log.Replicas[0].UsedBytes <= 0 || mid.Log.LastLSN <= before.Log.LastLSN {
		t.Errorf("log after the writes: %+v", mid.Log)
	}
	if w := mid.Windows.Last5m.Operations["create"].Count; w != 3 {
		t.Errorf("last 5m window counts %d creates, want 3", w)
	}

	obj := tm.object(t, "d/f1")
	if field(t, obj, "dirty_bytes") != strconv.Itoa(1<<20) || field(t, obj, "path") != "/d/f1" {
		t.Errorf("objects entry before flush:\n%s", obj)
	}
	if lsn := field(t, obj, "log_lsn"); !regexp.MustCompile(`^\d+-\d+$`).MatchString(lsn) {
		t.Errorf("log_lsn %q before flush, want a range", lsn)
	}
	if !strings.Contains(obj, " cache dirty") || strings.Contains(obj, " segment ") {
		t.Errorf("before flush the extents must be dirty in the cache:\n%s", obj)
	}

	// Flush one file's tree: only its bytes leave.
	if err := tm.ctlWrite("flush", "d/f1"); err != nil {
		t.Fatal(err)
	}
	obj = tm.object(t, "d/f1")
	// Its records stay in the log while older ones (of d/f0) are needed.
	if field(t, obj, "dirty_bytes") != "0" || !strings.Contains(obj, " segment ") || strings.Contains(obj, " cache dirty") {
		t.Errorf("objects entry after flushing it:\n%s", obj)
	}
	if other := tm.object(t, "d/f2"); field(t, other, "dirty_bytes") != strconv.Itoa(1<<20) {
		t.Errorf("a file outside the flushed path was flushed:\n%s", other)
	}

	if err := tm.ctlWrite("flush", "all"); err != nil {
		t.Fatal(err)
	}
	after := tm.report()
	if obj := tm.object(t, "d/f1"); field(t, obj, "log_lsn") != "none" {
		t.Errorf("after flush all the log still holds records of d/f1:\n%s", obj)
	}
	if after.Cache.DirtyBytes != 0 {
		t.Errorf("dirty bytes %d after flush all", after.Cache.DirtyBytes)
	}
	if got := after.Destage.BytesTotal - mid.Destage.BytesTotal; got < 3<<20 {
		t.Errorf("destage bytes rose by %d, want at least 3 MiB", got)
	}
	if after.Backend.Segments == 0 || after.Backend.LiveBytes < 3<<20 {
		t.Errorf("backend after flush: %+v", after.Backend)
	}

	text, err := os.ReadFile(tm.path(".dcache/stats"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"operations", "create", "cache", "destage", "log", "replica", "backend", "throttling", "last 5m"} {
		if !bytes.Contains(text, []byte(want)) {
			t.Errorf("stats does not mention %q:\n%s", want, text)
		}
	}
}

// TestCtlDirBehavesLikeSysfs: hidden from the root listing but reachable,
// read-only where it must be, refusals with the right errno and a log line.
func TestCtlDirBehavesLikeSysfs(t *testing.T) {
	tm := newTestMountWith(t, statsConfig(), func(tm *testMount) {
		tm.record = true
		tm.stats.ConfigYAML = []byte("cache:\n  size: 64MiB\n")
	})
	ents, err := os.ReadDir(tm.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == ".dcache" {
			t.Error(".dcache is listed in the root directory")
		}
	}
	names := func(dir string) []string {
		ents, err := os.ReadDir(tm.path(dir))
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return n
	}
	if got := strings.Join(names(".dcache"), " "); got != "check config flush inflight log mode objects stats stats.json" {
		t.Errorf(".dcache lists %q", got)
	}
	if b, err := os.ReadFile(tm.path(".dcache/config")); err != nil || string(b) != "cache:\n  size: 64MiB\n" {
		t.Errorf("config reads %q, %v", b, err)
	}
	if b, err := os.ReadFile(tm.path(".dcache/log")); err != nil || !strings.Contains(string(b), "replica") {
		t.Errorf("log reads %q, %v", b, err)
	}
	if b, err := os.ReadFile(tm.path(".dcache/mode")); err != nil || string(b) != "write-back\n" {
		t.Errorf("mode reads %q, %v", b, err)
	}

	errnoOf := func(err error) syscall.Errno {
		var e syscall.Errno
		if errors.As(err, &e) {
			return e
		}
		if err != nil {
			t.Fatalf("not an errno: %v", err)
		}
		return 0
	}
	for _, c := range []struct {
		what string
		err  error
		want syscall.Errno
	}{
		{"mode write-back", tm.ctlWrite("mode", "write-back"), 0},
		{"mode write-behind", tm.ctlWrite("mode", "write-behind"), syscall.EINVAL},
		{"check run", tm.ctlWrite("check", "run"), syscall.EOPNOTSUPP},
		{"check bogus", tm.ctlWrite("check", "bogus"), syscall.EINVAL},
		{"flush empty", tm.ctlWrite("flush", ""), syscall.EINVAL},
		{"flush missing path", tm.ctlWrite("flush", "no/such/file"), syscall.ENOENT},
		{"write stats", tm.ctlWrite("stats", "x"), syscall.EACCES},
		{"create in .dcache", os.WriteFile(tm.path(".dcache/new"), nil, 0o644), syscall.EPERM},
		{"mkdir in .dcache", os.Mkdir(tm.path(".dcache/d"), 0o755), syscall.EPERM},
		{"unlink stats", os.Remove(tm.path(".dcache/stats")), syscall.EPERM},
		{"rmdir .dcache", syscall.Rmdir(tm.path(".dcache")), syscall.EPERM},
		{"mkdir .dcache", os.Mkdir(tm.path(".dcache"), 0o755), syscall.EEXIST},
		{"rename onto .dcache", os.Rename(tm.path(".dcache/stats"), tm.path("x")), syscall.EPERM},
		{"chmod stats", os.Chmod(tm.path(".dcache/stats"), 0o777), syscall.EPERM},
		{"object of a missing inode", func() error { _, err := os.ReadFile(tm.path(".dcache/objects/987654")); return err }(), syscall.ENOENT},
	} {
		if got := errnoOf(c.err); got != c.want {
			t.Errorf("%s: %v, want %v", c.what, got, c.want)
		}
	}
	// Each refused control write says what is accepted.
	var warned []string
	for _, e := range tm.hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			if a, ok := e.Data["accepted"]; ok {
				warned = append(warned, fmt.Sprint(a))
			}
		}
	}
	if got := strings.Join(warned, "|"); got != `write-back, write-through or write-around|"run"|"all" or a path relative to the mount|"all" or a path relative to the mount` {
		t.Errorf("log lines for the refused writes name %q", got)
	}

	// The mode file switches the engine's cache mode.
	if err := tm.ctlWrite("mode", "write-through"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(tm.path(".dcache/mode")); err != nil || string(b) != "write-through\n" || tm.eng.Mode() != cachelayer.ModeWriteThrough {
		t.Errorf("after writing write-through, mode reads %q (%v), engine %v", b, err, tm.eng.Mode())
	}

	// A file named like the directory cannot be created beside it.
	if err := os.WriteFile(tm.path(".dcache"), nil, 0o644); errnoOf(err) != syscall.EISDIR && errnoOf(err) != syscall.EEXIST {
		t.Errorf("creating a file named .dcache: %v", err)
	}
}

// TestCtlDirShownWhenConfigured lists the directory when asked to.
func TestCtlDirShownWhenConfigured(t *testing.T) {
	tm := newTestMountWith(t, statsConfig(), func(tm *testMount) {
		tm.stats = StatsOptions{DirName: "stats-dir", ShowInReaddir: true}
	})
	for i := 0; i < 5; i++ {
		mustWriteSynced(t, tm.path(fmt.Sprintf("f%d", i)), []byte("x"))
	}
	ents, err := os.ReadDir(tm.mnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "f0 f1 f2 f3 f4 stats-dir" {
		t.Errorf("root lists %q", got)
	}
	if _, err := os.Stat(tm.path(".dcache")); !os.IsNotExist(err) {
		t.Errorf(".dcache with dir_name stats-dir: %v", err)
	}
	if _, err := os.ReadFile(tm.path("stats-dir/stats.json")); err != nil {
		t.Error(err)
	}
}

// gate blocks log syncs while closed.
type gate struct {
	mu      sync.Mutex
	blocked bool
	open    chan struct{}
}

func (g *gate) Inject(op device.Op) device.Fault {
	if op.Kind != device.OpSync {
		return device.Fault{}
	}
	g.mu.Lock()
	ch, blocked := g.open, g.blocked
	g.mu.Unlock()
	if blocked {
		<-ch
	}
	return device.Fault{}
}

// TestInflightShowsStage holds an fsync in a log replica's sync and finds
// it in inflight with that stage, and warned about once.
func TestInflightShowsStage(t *testing.T) {
	if !statsOn {
		t.Skip("request statistics are compiled out (-tags nostats)")
	}
	g := &gate{open: make(chan struct{})}
	tm := newTestMountWith(t, statsConfig(), func(tm *testMount) {
		tm.record = true
		tm.stats.HungThreshold = 50 * time.Millisecond
		tm.logFaults = []device.Injector{g}
	})
	f, err := os.Create(tm.path("slow"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.blocked = true
	g.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()

	ino := lstat(t, tm.path("slow")).Ino
	want := regexp.MustCompile(fmt.Sprintf(`(?m)^\S+ fsync %d 0 log replica 0$`, ino))
	var text string
	for deadline := time.Now().Add(30 * time.Second); ; {
		b, err := os.ReadFile(tm.path(".dcache/inflight"))
		if err != nil {
			t.Fatal(err)
		}
		text = string(b)
		if want.MatchString(text) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !want.MatchString(text) {
		t.Errorf("inflight does not show the fsync waiting on replica 0:\n%s", text)
	}
	// The warning comes from a scan every threshold/2.
	var hung []*logrus.Entry
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		hung = hung[:0]
		for _, e := range tm.hook.AllEntries() {
			if e.Message == "request hung" && e.Data["op"] == "fsync" {
				hung = append(hung, e)
			}
		}
		if len(hung) > 0 {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // several more scans
	n := 0
	for _, e := range tm.hook.AllEntries() {
		if e.Message == "request hung" && e.Data["op"] == "fsync" {
			n++
			if e.Data["stage"] != "log replica 0" || e.Level != logrus.WarnLevel {
				t.Errorf("hung warning %v: %v", e.Level, e.Data)
			}
		}
	}
	if n != 1 {
		t.Errorf("the hung fsync was warned about %d times, want once", n)
	}
	g.mu.Lock()
	g.blocked = false
	close(g.open)
	g.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := tm.report(); r.Inflight.Hung != 0 {
		t.Errorf("%d requests still hung after the sync went through", r.Inflight.Hung)
	}
}

// TestCtlDirForUsers: anyone reads the statistics, only root controls.
func TestCtlDirForUsers(t *testing.T) {
	tm := newTestMount(t, statsConfig())
	h := newHelper(t, tm)
	u := user(testUid, testGid)
	h.expect(u, 0, "open", tm.path(".dcache/stats"), "0", "0", "")
	h.expect(u, 0, "open", tm.path(".dcache/mode"), "0", "0", "")
	h.expect(u, syscall.EACCES, "open", tm.path(".dcache/flush"), strconv.Itoa(syscall.O_WRONLY), "0", "all")
	h.expect(u, syscall.EACCES, "open", tm.path(".dcache/mode"), strconv.Itoa(syscall.O_WRONLY), "0", "write-back")
	h.expect(nil, 0, "open", tm.path(".dcache/mode"), strconv.Itoa(syscall.O_WRONLY), "0", "write-back")
}

// kernelPagesMount mounts with room for dirty pages in the kernel's page
// cache (fuse.kernel_dirty), so that bytes written to a file left open
// stay there until something makes the kernel write them back.
func kernelPagesMount(t *testing.T) *testMount {
	return newTestMountWith(t, statsConfig(), func(tm *testMount) { tm.mo.KernelDirty = 256 << 20 })
}

// writeLeftOpen writes data to a new file at path and leaves it open (it
// is closed when the test ends): neither closed nor synced.
func writeLeftOpen(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}

// TestFlushTakesKernelPages: bytes written but still in the kernel's page
// cache (the file open, not synced; fuse.kernel_dirty lets the kernel
// hold them) are in the backend once a write of "all" to the flush file
// returns.
func TestFlushTakesKernelPages(t *testing.T) {
	tm := kernelPagesMount(t)
	before := tm.report()
	data := bytes.Repeat([]byte("kernel pages "), 4<<20/13)
	writeLeftOpen(t, tm.path("f"), data)
	held := tm.report()
	t.Logf("before the flush the engine had %d of %d bytes", held.Cache.BytesWrittenTotal-before.Cache.BytesWrittenTotal, len(data))
	if err := tm.ctlWrite("flush", "all"); err != nil {
		t.Fatal(err)
	}
	after := tm.report()
	if got := after.Cache.BytesWrittenTotal - before.Cache.BytesWrittenTotal; got < int64(len(data)) {
		t.Errorf("after the flush the engine received %d bytes, want %d", got, len(data))
	}
	if after.Cache.DirtyBytes != 0 || after.Destage.BytesTotal-before.Destage.BytesTotal < int64(len(data)) {
		t.Errorf("after the flush: %d bytes dirty, %d destaged; want 0 and at least %d",
			after.Cache.DirtyBytes, after.Destage.BytesTotal-before.Destage.BytesTotal, len(data))
	}
}

// TestWriteThroughMount: after a switch to write-through, bytes written
// earlier and still in the kernel's page cache are handed to the engine,
// and a write(2) to a file opened after the switch returns with its bytes
// in the backend, neither closed nor synced.
func TestWriteThroughMount(t *testing.T) {
	tm := kernelPagesMount(t)
	data := bytes.Repeat([]byte("through "), 1<<20/8)
	writeLeftOpen(t, tm.path("early"), data)
	before := tm.report()
	if err := tm.ctlWrite("mode", "write-through"); err != nil {
		t.Fatal(err)
	}
	if got := tm.report().Cache.BytesWrittenTotal - before.Cache.BytesWrittenTotal; got < int64(len(data)) {
		t.Errorf("after the switch the engine got %d of the %d bytes written before it", got, len(data))
	}
	mid := tm.report()
	writeLeftOpen(t, tm.path("late"), data)
	after := tm.report()
	if after.Destage.BytesTotal-mid.Destage.BytesTotal < int64(len(data)) || after.Cache.DirtyBytes != 0 {
		t.Errorf("after a write-through write(2): %d bytes destaged, %d dirty; want at least %d and 0",
			after.Destage.BytesTotal-mid.Destage.BytesTotal, after.Cache.DirtyBytes, len(data))
	}
}
