package main

// The inspection commands against a running daemon: stats, object,
// inflight and flush read and write the mount's .dcache files.

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/dcache/dcache/fs"
)

func TestStatsObjectFlushCommands(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	s.flags = append(s.flags, "--flush.max_dirty_age", "1h")
	d := s.start()
	d.waitActive(t)

	files := writeTree(t, s.mnt, 4, 2<<20)
	big := filepath.Join(s.mnt, "obj")
	if err := os.WriteFile(big, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fsync(int(f.Fd())); err != nil { // the kernel's write-back cache gives the bytes to the daemon
		t.Fatal(err)
	}
	f.Close()

	// From another directory, with a relative mount point.
	sub := filepath.Join(s.dir, "elsewhere")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) result {
		t.Helper()
		c := s.command(args[0], args[1:]...)
		c.Dir = sub
		return runCmd(t, c)
	}
	r := run("stats", "--json", "../mnt")
	if r.code != 0 {
		t.Fatalf("stats --json: %s", r)
	}
	var rep fs.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stats --json is not a report: %v\n%s", err, r.stdout)
	}
	if rep.Cache.DirtyBytes < 3<<20 || rep.Cache.UsedBytes < rep.Cache.DirtyBytes || len(rep.Log.Replicas) != 1 || rep.Log.Replicas[0].UsedBytes <= 0 {
		t.Errorf("stats.json before flush: cache %+v log %+v", rep.Cache, rep.Log)
	}
	if rep.Windows.SinceMount.Operations["create"].Count < 5 {
		t.Errorf("creates counted: %d, want at least 5", rep.Windows.SinceMount.Operations["create"].Count)
	}
	// The documented keys are there under their names.
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cache.dirty_bytes", "cache.used_bytes", "destage.bytes_total", "log.replicas", "prefetch.hits_total", "quotas.directories", "backend.live_fraction", "throttle.writers_delayed_total"} {
		sec, key, _ := strings.Cut(k, ".")
		if m, ok := raw[sec].(map[string]any); !ok || m[key] == nil {
			t.Errorf("stats.json has no %s", k)
		}
	}

	if r := run("stats", "../mnt"); r.code != 0 || !strings.Contains(r.stdout, "operations") || !strings.Contains(r.stdout, "destage") {
		t.Errorf("stats: %s", r)
	}
	r = run("object", "../mnt", "../mnt/obj")
	if r.code != 0 || !strings.Contains(r.stdout, "dirty_bytes: 3145728") || !regexp.MustCompile(`log_lsn: \d+-\d+`).MatchString(r.stdout) {
		t.Errorf("object before flush: %s", r)
	}
	if r := run("inflight", "../mnt"); r.code != 0 || !strings.HasPrefix(r.stdout, "# requests older than") {
		t.Errorf("inflight: %s", r)
	}

	r = run("flush", "../mnt", "../mnt/obj")
	if r.code != 0 {
		t.Fatalf("flush PATH: %s", r)
	}
	r = run("object", "../mnt", "../mnt/obj")
	if r.code != 0 || !strings.Contains(r.stdout, "dirty_bytes: 0") || !strings.Contains(r.stdout, " segment ") {
		t.Errorf("object after flush PATH: %s", r)
	}
	if r := run("flush", "-q", "../mnt"); r.code != 0 {
		t.Fatalf("flush: %s", r)
	}
	r = run("stats", "--json", "../mnt")
	var after fs.Report
	if err := json.Unmarshal([]byte(r.stdout), &after); err != nil {
		t.Fatal(err)
	}
	if after.Cache.DirtyBytes != 0 || after.Destage.BytesTotal-rep.Destage.BytesTotal < 3<<20 {
		t.Errorf("after flush: dirty %d, destaged %d more", after.Cache.DirtyBytes, after.Destage.BytesTotal-rep.Destage.BytesTotal)
	}

	// Refusals: a path off the mount, a directory that is not a mount.
	if r := run("object", "../mnt", "/"); r.code != 2 || !strings.Contains(r.stderr, "is not on the mount") {
		t.Errorf("object of a path off the mount: %s", r)
	}
	if r := run("stats", "."); r.code != 2 || !strings.Contains(r.stderr, "not a dcache mount") {
		t.Errorf("stats of a plain directory: %s", r)
	}
	checkTree(t, s.mnt, files)
	if r := s.run("umount", s.mnt); r.code != 0 {
		t.Fatalf("umount: %s", r)
	}
}

// TestMetricsEndpoint scrapes stats.metrics_listen and finds the
// documented metric names with values that follow a write.
func TestMetricsEndpoint(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s.flags = append(s.flags, "--stats.metrics_listen", addr, "--flush.max_dirty_age", "1h")
	d := s.start()
	d.waitActive(t)
	if err := os.WriteFile(filepath.Join(s.mnt, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(s.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fsync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	f.Close()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp.Status, err)
	}
	text := string(body)
	for _, re := range []string{
		`(?m)^dcache_fuse_requests_total\{op="create"\} [1-9]`,
		`(?m)^dcache_fuse_request_bytes_total\{op="write"\} [1-9]`,
		`(?m)^dcache_fuse_request_duration_seconds_bucket\{op="write",le="\+Inf"\} [1-9]`,
		`(?m)^dcache_fuse_request_duration_seconds_count\{op="write"\} [1-9]`,
		`(?m)^dcache_cache_dirty_bytes 1\.048576e\+06$`,
		`(?m)^dcache_cache_used_bytes [1-9]`,
		`(?m)^dcache_cache_written_bytes_total 1\.048576e\+06$`,
		`(?m)^dcache_destage_bytes_total \d`,
		`(?m)^dcache_log_replica_used_bytes\{device="[^"]+",replica="0"\} [1-9]`,
		`(?m)^dcache_log_replica_healthy\{device="[^"]+",replica="0"\} 1$`,
		`(?m)^dcache_backend_segments \d`,
		`(?m)^process_cpu_seconds_total `,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("/metrics has no line matching %s", re)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
	if r := s.run("umount", s.mnt); r.code != 0 {
		t.Fatalf("umount: %s", r)
	}
}
