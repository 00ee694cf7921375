package main

// The command line, run as a user runs it: bad input refused with one clear
// line and nothing changed, and the mount lifecycle (detached and
// foreground mounts, umount, SIGTERM, stale mounts after kill -9).

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// oneLine checks that a refusal is a single line saying what it must.
func oneLine(t *testing.T, r result, want ...string) {
	t.Helper()
	msg := strings.TrimRight(r.stderr, "\n")
	if msg == "" || strings.Contains(msg, "\n") {
		t.Errorf("want a one-line error on stderr, got:\n%s", r)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not say %q:\n%s", w, r)
		}
	}
}

// lastError is the "dcache: ..." line a foreground command ends with (its
// log lines come before it on the same stderr); it must be one line.
func lastError(t *testing.T, r result) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "dcache: ") {
		t.Fatalf("stderr does not end with a dcache: error line:\n%s", r)
	}
	return last
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists (err %v); a refused command must create nothing", path, err)
	}
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("%s holds %d entries, want none", dir, len(ents))
	}
}

// treeHash maps every regular file under dir (but skip) to its SHA-256.
func treeHash(t *testing.T, dir string, skip ...string) map[string][32]byte {
	t.Helper()
	h := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		for _, s := range skip {
			if rel == s {
				return nil
			}
		}
		if !e.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		sum := sha256.New()
		if _, err := io.Copy(sum, f); err != nil {
			return err
		}
		h[rel] = [32]byte(sum.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// lockFiles are rewritten by every attempt to mount (they hold the pid of
// the process holding the lock); they are not the filesystem's data.
var lockFiles = []string{lockName, filepath.Join("backend", "lock")}

func sameTree(t *testing.T, what string, before, after map[string][32]byte) {
	t.Helper()
	for p, s := range before {
		a, ok := after[p]
		switch {
		case !ok:
			t.Errorf("%s: %s was removed", what, p)
		case a != s:
			t.Errorf("%s: %s was modified", what, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s was created", what, p)
		}
	}
}

func TestBadConfigRefused(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string   // --config file content, when not empty
		env   []string // extra environment
		flags []string // extra flags
		want  []string // every key (or origin) the error must name
	}{
		{
			name: "unknown keys in the file",
			yaml: "bogus: 1\ncache:\n  sise: 1GiB\nlog:\n  replicas:\n    - {path: x, kind: ssd}\n",
			want: []string{"3 problems", "bogus: unknown key", "cache.sise: unknown key", "log.replicas[0].kind: unknown key"},
		},
		{
			name: "wrong types",
			yaml: "cache:\n  size: banana\nflush:\n  high_watermark: high\n  max_dirty_age: 5\nfuse:\n  allow_other: maybe\n",
			want: []string{"4 problems", "cache.size:", "flush.high_watermark:", "flush.max_dirty_age:", "fuse.allow_other:"},
		},
		{
			name: "out of range",
			yaml: "cache:\n  size: 1MiB\nflush:\n  high_watermark: 1.5\n  segment_size: 1000\nfuse:\n  max_write: 2MiB\nlog:\n  sync_interval: 0s\n",
			want: []string{"cache.size: 1MiB is below", "flush.high_watermark: 1.5", "flush.segment_size:", "fuse.max_write:", "log.sync_interval:"},
		},
		{
			name: "log replica too small",
			yaml: "log:\n  replicas:\n    - {path: x, type: ssd, size: 1MiB}\n",
			want: []string{"log.replicas[0].size: 1MiB is below the minimum of 8MiB"},
		},
		{
			name: "environment",
			env:  []string{"DCACHE_CACHE_SIZE=banana", "DCACHE_CACHE_SIZZE=1GiB"},
			want: []string{"2 problems", "$DCACHE_CACHE_SIZE: cache.size:", "$DCACHE_CACHE_SIZZE: unknown environment variable"},
		},
		{
			name:  "flags",
			flags: []string{"--cache.size=banana", "--flush.low_watermark=0.9", "--log.replicas", "x:nvme:1GiB"},
			want:  []string{"3 problems", "--cache.size: cache.size:", "flush.low_watermark: 0.9 must be below", "log.replicas[0].type:"},
		},
		{
			name:  "every source at once",
			yaml:  "cahce:\n  size: 1GiB\n",
			env:   []string{"DCACHE_LOG_SYNC=sometimes"},
			flags: []string{"--fuse.attr_timeout=-1s"},
			want:  []string{"3 problems", "cahce: unknown key", "log.sync:", "fuse.attr_timeout:"},
		},
		{
			name:  "unknown flag",
			flags: []string{"--cache.sise=1GiB"},
			want:  []string{"unknown flag: --cache.sise"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t)
			// Only the data dir comes from a flag, so that the case's
			// file or variables decide every other key; -d, so that a
			// configuration wrongly accepted cannot hang the test in a
			// foreground mount.
			s.flags = []string{"--data-dir", s.data, "-d"}
			var args []string
			if tc.yaml != "" {
				path := filepath.Join(s.dir, "config.yaml")
				if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", path)
			}
			args = append(append(args, tc.flags...), s.mnt)
			c := s.command("mount", args...)
			c.Env = childEnv(tc.env...)
			r := runCmd(t, c)
			if r.code != 2 {
				t.Errorf("exit code %d, want 2:\n%s", r.code, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("the error does not name %q:\n%s", w, r.stderr)
				}
			}
			mustNotExist(t, s.data)
			emptyDir(t, s.mnt)
		})
	}
}

func TestMissingConfigFile(t *testing.T) {
	s := newSite(t)
	path := filepath.Join(s.dir, "missing.yaml")
	for _, detach := range []bool{false, true} {
		args := []string{"--config", path, s.mnt}
		if detach {
			args = append([]string{"-d"}, args...)
		}
		r := s.run("mount", args...)
		if r.code != 2 {
			t.Errorf("detach=%v: exit code %d, want 2:\n%s", detach, r.code, r)
		}
		oneLine(t, r, path, "not found")
	}
	mustNotExist(t, s.data)
}

func TestMountPointRefused(t *testing.T) {
	s := newSite(t)
	file := filepath.Join(s.dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(s.dir, "missing")
	for _, tc := range []struct {
		point, want string
	}{
		{missing, "does not exist"},
		{file, "is not a directory"},
	} {
		for _, detach := range []bool{false, true} {
			args := []string{tc.point}
			if detach {
				args = append([]string{"-d"}, args...)
			}
			r := s.run("mount", args...)
			if r.code != 2 {
				t.Errorf("%s (detach=%v): exit code %d, want 2:\n%s", tc.point, detach, r.code, r)
			}
			oneLine(t, r, tc.point, tc.want)
		}
	}
	mustNotExist(t, missing)
	mustNotExist(t, s.data)
}

func TestFormatNeedsYes(t *testing.T) {
	s := newSite(t)
	r := s.run("format")
	if r.code != 2 {
		t.Errorf("exit code %d, want 2:\n%s", r.code, r)
	}
	oneLine(t, r, "--yes")
	mustNotExist(t, s.data)
}

// initSite mounts once and unmounts cleanly, so that the data dir holds a
// backend and a log.
func initSite(t *testing.T, s *site) {
	t.Helper()
	d := s.start()
	d.waitActive(t)
	d.signal(syscall.SIGTERM)
	if code, ok := d.wait(time.Minute); !ok || code != 0 {
		t.Fatalf("clean stop: exit %d (ended %v); log:\n%s", code, ok, d.log())
	}
}

func TestMountRefusesBusy(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	d := s.start()
	d.waitActive(t)

	// The mount point is mounted already (by a dcache with another data
	// dir this time): refused before that data dir is created.
	other := filepath.Join(s.dir, "other")
	for _, detach := range []bool{false, true} {
		args := append(smallFlags(other, ""), s.mnt)
		if detach {
			args = append([]string{"-d"}, args...)
		}
		r := runCmd(t, withEnv(exec.Command(dcacheBin(t), append([]string{"mount"}, args...)...)))
		if r.code == 0 {
			t.Fatalf("a second mount on %s succeeded", s.mnt)
		}
		oneLine(t, r, s.mnt, "is already mounted")
		mustNotExist(t, other)
	}
	if n := mountCount(s.mnt); n != 1 {
		t.Errorf("%d mounts on %s, want 1", n, s.mnt)
	}

	// The data dir is in use by the running daemon: refused, naming it.
	mnt2 := filepath.Join(s.dir, "mnt2")
	if err := os.Mkdir(mnt2, 0o755); err != nil {
		t.Fatal(err)
	}
	r := s.run("mount", "-d", mnt2)
	if r.code == 0 {
		t.Fatalf("a second daemon on %s started", s.data)
	}
	oneLine(t, r, "in use by another running dcache", "pid "+strconv.Itoa(d.pid), s.mnt)
	r = s.run("mount", mnt2)
	if r.code == 0 {
		t.Fatalf("a second daemon on %s started", s.data)
	}
	if l := lastError(t, r); !strings.Contains(l, "pid "+strconv.Itoa(d.pid)) {
		t.Errorf("the error does not name pid %d: %s", d.pid, l)
	}
	if mountCount(mnt2) != 0 {
		t.Errorf("%s got mounted", mnt2)
	}
	// The first daemon is unharmed.
	if err := os.WriteFile(filepath.Join(s.mnt, "f"), []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGTERM)
	if code, _ := d.wait(time.Minute); code != 0 {
		t.Fatalf("exit %d after SIGTERM; log:\n%s", code, d.log())
	}
}

func withEnv(c *exec.Cmd) *exec.Cmd {
	c.Env = childEnv()
	return c
}

// userBin copies the binary where user uid can run it.
func userBin(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(dcacheBin(t))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "dcache")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDataDirUnwritable(t *testing.T) {
	requireFUSE(t)
	t.Run("another user", func(t *testing.T) {
		s := newSite(t)
		initSite(t, s)
		// The user must reach the test directory and run the binary.
		for d := s.dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		bin := userBin(t, s.dir)
		before := treeHash(t, s.data)
		c := exec.Command(bin, append(append([]string{"mount"}, s.flags...), s.mnt)...)
		c.Env, c.Dir = childEnv(), s.dir
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
		r := runCmd(t, c)
		if r.code == 0 {
			t.Fatalf("uid 1000 mounted on a data dir it cannot write:\n%s", r)
		}
		if l := lastError(t, r); !strings.Contains(l, "not writable") || !strings.Contains(l, s.data) {
			t.Errorf("want a data dir not writable error, got: %s", l)
		}
		sameTree(t, "data dir", before, treeHash(t, s.data))
		if mountCount(s.mnt) != 0 {
			t.Errorf("%s got mounted", s.mnt)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		s := newSite(t)
		initSite(t, s)
		if err := syscall.Mount(s.data, s.data, "", syscall.MS_BIND, ""); err != nil {
			t.Skipf("bind mount: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(s.data, syscall.MNT_DETACH) })
		if err := syscall.Mount("", s.data, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			t.Skipf("read-only remount: %v", err)
		}
		r := s.run("mount", "-d", s.mnt)
		if r.code == 0 {
			t.Fatalf("mounted on a read-only data dir:\n%s", r)
		}
		oneLine(t, r, s.data, "not writable")
		if mountCount(s.mnt) != 0 {
			t.Errorf("%s got mounted", s.mnt)
		}
	})
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// setBackendVersion rewrites the version of a backend superblock (see
// backend/doc.go: version at 8, CRC-32C of bytes 0..59 at 60).
func setBackendVersion(t *testing.T, path string, v uint32) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 64 || string(b[:8]) != "DCBKSUPR" {
		t.Fatalf("%s is not a backend superblock", path)
	}
	binary.LittleEndian.PutUint32(b[8:], v)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setLogVersion rewrites the version in both superblock slots of a log
// replica (see logarea/doc.go: 4 KiB slots, version at 8, CRC-32C of bytes
// 0..12 and 16..512 at 12).
func setLogVersion(t *testing.T, path string, v uint32) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for slot := int64(0); slot < 2; slot++ {
		b := make([]byte, 512)
		if _, err := f.ReadAt(b, slot*4096); err != nil {
			t.Fatal(err)
		}
		if string(b[:8]) != "DCLOGSB\x00" {
			continue // a slot never written
		}
		binary.LittleEndian.PutUint32(b[8:], v)
		sum := crc32.Update(crc32.Checksum(b[:12], castagnoli), castagnoli, b[16:])
		binary.LittleEndian.PutUint32(b[12:], sum)
		if _, err := f.WriteAt(b, slot*4096); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewerFormatRefused(t *testing.T) {
	requireFUSE(t)
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, s *site)
		want string
	}{
		{"backend", func(t *testing.T, s *site) {
			setBackendVersion(t, filepath.Join(s.data, "backend", "superblock"), 2)
		}, "format version 2"},
		{"log", func(t *testing.T, s *site) { setLogVersion(t, filepath.Join(s.data, "log"), 2) }, "format version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t)
			initSite(t, s)
			tc.edit(t, s)
			before := treeHash(t, s.data, lockFiles...)
			r := s.run("mount", "-d", s.mnt)
			if r.code == 0 {
				t.Fatalf("mounted a %s of a newer format:\n%s", tc.name, r)
			}
			oneLine(t, r, tc.want)
			r = s.run("mount", s.mnt)
			if r.code == 0 {
				t.Fatalf("mounted a %s of a newer format:\n%s", tc.name, r)
			}
			if l := lastError(t, r); !strings.Contains(l, tc.want) {
				t.Errorf("the error does not say %q: %s", tc.want, l)
			}
			sameTree(t, "data dir", before, treeHash(t, s.data, append(lockFiles, "dcache.log")...))
			if mountCount(s.mnt) != 0 {
				t.Errorf("%s got mounted", s.mnt)
			}
		})
	}
}

func TestForeignLog(t *testing.T) {
	requireFUSE(t)
	a, b := newSite(t), newSite(t)
	initSite(t, a)
	initSite(t, b)
	// b's configuration with a's log: the log belongs to a's backend.
	aLog := filepath.Join(a.data, "log")
	b.flags = smallFlags(b.data, aLog+":ssd:64MiB")
	beforeLog := treeHash(t, a.data, lockFiles...)
	beforeB := treeHash(t, b.data, lockFiles...)
	r := b.run("mount", "-d", b.mnt)
	if r.code == 0 {
		t.Fatalf("mounted with a foreign log:\n%s", r)
	}
	oneLine(t, r, aLog, "belongs to another filesystem", "dcache format --yes")
	sameTree(t, "foreign log", beforeLog, treeHash(t, a.data, lockFiles...))
	sameTree(t, "data dir", beforeB, treeHash(t, b.data, append(lockFiles, "dcache.log")...))

	r = b.run("format", "--yes")
	if r.code != 0 {
		t.Fatalf("format: %s", r)
	}
	if !strings.Contains(r.stdout, "formatted log replica "+aLog) {
		t.Errorf("format does not say what it formatted:\n%s", r)
	}
	r = b.run("mount", "-d", b.mnt)
	if r.code != 0 {
		t.Fatalf("mount after format: %s", r)
	}
	want := []byte("written through the formatted log")
	if err := os.WriteFile(filepath.Join(b.mnt, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := b.run("umount", b.mnt); r.code != 0 {
		t.Fatalf("umount: %s", r)
	}
	if r := b.run("mount", "-d", b.mnt); r.code != 0 {
		t.Fatalf("remount: %s", r)
	}
	got, err := os.ReadFile(filepath.Join(b.mnt, "f"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("after remount: %q, %v; want %q", got, err, want)
	}
	if r := b.run("umount", b.mnt); r.code != 0 {
		t.Fatalf("umount: %s", r)
	}
}

// writeTree writes n files of a few KiB and one of big bytes under dir and
// returns their contents by name.
func writeTree(t *testing.T, dir string, n, big int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for i := range n {
		b := bytes.Repeat([]byte(strconv.Itoa(i)+" "), 1000+i)
		files["f"+strconv.Itoa(i)] = b
	}
	files["big"] = crashData(uint64(big), big)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func checkTree(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from the %d written", name, len(got), len(want))
		}
	}
}

// lifecycle checks the lifecycle lines of one daemon run, in order, and
// that the start line gives the pid and the version.
func lifecycle(t *testing.T, lines []string, pid int, version string) {
	t.Helper()
	start := -1
	for i, l := range lines {
		if strings.Contains(l, "msg=starting") && strings.Contains(l, "pid="+strconv.Itoa(pid)+" ") {
			start = i
			if !strings.Contains(l, "version="+version) {
				t.Errorf("the start line does not give version %s: %s", version, l)
			}
			break
		}
	}
	if start < 0 {
		t.Fatalf("no start line with pid %d in:\n%s", pid, strings.Join(lines, "\n"))
	}
	next := start
	for _, st := range []string{"create", "init", "recover", "active", "draining", "stopped"} {
		re := regexp.MustCompile(`msg=lifecycle .*pid=` + strconv.Itoa(pid) + ` state=` + st + `\b`)
		found := false
		for ; next < len(lines); next++ {
			if re.MatchString(lines[next]) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("no lifecycle state %s for pid %d after the previous state in:\n%s", st, pid, strings.Join(lines[start:], "\n"))
		}
	}
}

// binVersion is what "dcache version" says.
func binVersion(t *testing.T) string {
	t.Helper()
	r := runCmd(t, withEnv(exec.Command(dcacheBin(t), "version")))
	v, ok := strings.CutPrefix(strings.TrimSpace(r.stdout), "dcache ")
	if r.code != 0 || !ok {
		t.Fatalf("dcache version: %s", r)
	}
	return v
}

// session returns the lines of the daemon run with pid pid from a log that
// several runs appended to.
func session(lines []string, pid int) []string {
	var out []string
	tag := "pid=" + strconv.Itoa(pid) + " "
	in := false
	for _, l := range lines {
		if strings.Contains(l, "msg=starting") {
			in = strings.Contains(l, tag)
		}
		if in {
			out = append(out, l)
		}
	}
	return out
}

var mountedRe = regexp.MustCompile(`\(pid (\d+), log `)

func TestDetachedMountAndUmount(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	version := binVersion(t)
	var files map[string][]byte
	for round := range 2 {
		r := s.run("mount", "-d", s.mnt)
		if r.code != 0 {
			t.Fatalf("mount -d: %s", r)
		}
		m := mountedRe.FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("mount -d does not give the daemon's pid:\n%s", r)
		}
		pid, _ := strconv.Atoi(m[1])
		// Usable as soon as mount -d returned.
		if mountCount(s.mnt) != 1 {
			t.Fatalf("%s is not mounted after mount -d returned", s.mnt)
		}
		if round == 0 {
			files = writeTree(t, s.mnt, 50, 24<<20)
		}
		checkTree(t, s.mnt, files)

		r = s.run("umount", s.mnt)
		if r.code != 0 {
			t.Fatalf("umount: %s", r)
		}
		if processAlive(pid) {
			t.Errorf("daemon %d still runs after umount returned", pid)
		}
		if mountCount(s.mnt) != 0 {
			t.Errorf("%s still mounted after umount", s.mnt)
		}
		b, err := os.ReadFile(filepath.Join(s.data, "dcache.log"))
		if err != nil {
			t.Fatal(err)
		}
		lines := session(strings.Split(string(b), "\n"), pid)
		lifecycle(t, lines, pid, version)
		if round == 1 {
			// The umount of round 0 destaged everything and emptied
			// the log: nothing to replay.
			if n := replayed(lines); n != 0 {
				t.Errorf("the mount after a clean umount replayed %d log records, want 0", n)
			}
		}
	}
	if r := s.run("umount", s.mnt); r.code != 2 {
		t.Errorf("umount of a point not mounted: want exit 2: %s", r)
	}
}

func TestSigtermUnmountsCleanly(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	version := binVersion(t)
	d := s.start()
	d.waitActive(t)
	files := writeTree(t, s.mnt, 20, 40<<20) // more than the dirty budget
	f, err := os.OpenFile(filepath.Join(s.mnt, "open"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("left open, not fsynced"))
	files["open"] = []byte("left open, not fsynced")
	f.Close()

	d.signal(syscall.SIGTERM)
	code, ok := d.wait(2 * time.Minute)
	if !ok || code != 0 {
		t.Fatalf("after SIGTERM: exit %d (ended %v), want 0; log:\n%s", code, ok, d.log())
	}
	if mountCount(s.mnt) != 0 {
		t.Errorf("%s still mounted after SIGTERM", s.mnt)
	}
	lifecycle(t, d.logLines(), d.pid, version)

	d = s.start()
	d.waitActive(t)
	if n := replayed(d.logLines()); n != 0 {
		t.Errorf("the mount after SIGTERM replayed %d log records, want 0", n)
	}
	checkTree(t, s.mnt, files)
	d.signal(syscall.SIGTERM)
	if code, _ := d.wait(time.Minute); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, d.log())
	}
}

func TestStaleMountCleanedUp(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	d := s.start()
	d.waitActive(t)
	want := []byte("fsynced before kill -9")
	f, err := os.Create(filepath.Join(s.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(want)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for round := range 2 {
		d.kill()
		if _, ok := d.wait(time.Minute); !ok {
			t.Fatalf("dcache pid %d did not exit after SIGKILL", d.pid)
		}
		// The kernel keeps the dead mount: every request fails.
		var st syscall.Statfs_t
		if err := syscall.Statfs(s.mnt, &st); err != syscall.ENOTCONN {
			t.Fatalf("statfs of the dead mount: %v, want ENOTCONN", err)
		}
		if n := mountCount(s.mnt); n != 1 {
			t.Fatalf("%d mounts on %s after kill -9, want the stale one", n, s.mnt)
		}
		if round == 0 {
			// At once, while the kernel may still answer stat from
			// its attribute cache.
			d = s.start()
			d.waitActive(t)
			if d.waitLine(regexp.MustCompile(`found a stale mount.*mountpoint=`+regexp.QuoteMeta(s.mnt)), 0) == "" {
				t.Errorf("no log line about the stale mount:\n%s", d.log())
			}
			if n := mountCount(s.mnt); n != 1 {
				t.Errorf("%d mounts on %s, want 1", n, s.mnt)
			}
			got, err := os.ReadFile(filepath.Join(s.mnt, "f"))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("after recovery: %q, %v; want %q", got, err, want)
			}
			continue
		}
		// dcache umount of a stale mount detaches it.
		r := s.run("umount", s.mnt)
		if r.code != 0 || !strings.Contains(r.stdout, "detached the stale mount") {
			t.Errorf("umount of a stale mount: %s", r)
		}
		if n := mountCount(s.mnt); n != 0 {
			t.Errorf("%d mounts on %s after umount", n, s.mnt)
		}
	}
}

func TestLogReplicaSet(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	l1, l2, l3 := filepath.Join(s.data, "l1"), filepath.Join(s.data, "l2"), filepath.Join(s.data, "l3")
	two := l1 + ":ssd:16MiB," + l2 + ":aep:16MiB"
	s.flags = smallFlags(s.data, two)

	// A crash while a first mount created its log left a partial replica
	// under its temporary name: the next mount starts over.
	if err := os.MkdirAll(s.data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l1+".creating", []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := s.start()
	d.waitActive(t)
	want := []byte("two replicas")
	f, err := os.Create(filepath.Join(s.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(want)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d.kill() // leave records in the log
	mustNotExist(t, l1+".creating")

	// A third replica cannot join an existing log.
	s.flags = smallFlags(s.data, two+","+l3+":ssd:16MiB")
	before := treeHash(t, s.data, lockFiles...)
	r := s.run("mount", "-d", s.mnt)
	if r.code == 0 {
		t.Fatalf("a new replica joined an existing log:\n%s", r)
	}
	oneLine(t, r, l3, "does not exist", "dcache format --yes")
	mustNotExist(t, l3)
	sameTree(t, "data dir", before, treeHash(t, s.data, append(lockFiles, "dcache.log")...))

	// A crash between the renames of a first mount's replicas.
	if err := os.Rename(l2, l2+".creating"); err != nil {
		t.Fatal(err)
	}
	s.flags = smallFlags(s.data, two)
	d = s.start()
	d.waitActive(t)
	if d.waitLine(regexp.MustCompile(`completed the creation of a log replica`), 0) == "" {
		t.Errorf("no log line about the completed replica:\n%s", d.log())
	}
	if n := replayed(d.logLines()); n <= 0 {
		t.Errorf("replayed %d records after kill -9, want some", n)
	}
	got, err := os.ReadFile(filepath.Join(s.mnt, "f"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("after recovery: %q, %v; want %q", got, err, want)
	}
	d.signal(syscall.SIGTERM)
	if code, _ := d.wait(time.Minute); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, d.log())
	}
}

// TestHungMountOfDeadDaemon: a daemon killed while one of its threads waits
// on a request to its own mount (go-fuse opens a file in the mount while
// mounting) cannot finish dying: it stays a zombie holding the data dir's
// lock and the mount's connection, on which every request hangs. The next
// mount must abort that connection instead of asking it (statfs would hang
// forever), then wait for the lock to be released.
//
// The test builds the same state by hand: the serving daemon is stopped
// (SIGSTOP: its connection is open and answers nothing) and its lock file
// names a pid that has exited, as the zombie's would. The test kills the
// stopped daemon once the new mount has detached the stale one, as the
// abort lets a real zombie finish exiting.
func TestHungMountOfDeadDaemon(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	a := s.start()
	a.waitActive(t)
	want := []byte("survives a hung mount")
	f, err := os.Create(filepath.Join(s.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(want)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGSTOP)
	lock := filepath.Join(s.data, lockName)
	if err := os.WriteFile(lock, []byte(strconv.Itoa(gone.Process.Pid)+"\n"+s.mnt+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	b := s.start()
	if b.waitLine(regexp.MustCompile(`found a stale mount`), time.Minute) == "" {
		a.kill()
		t.Fatalf("the new mount did not detach the hung one; log:\n%s", b.log())
	}
	a.kill()
	b.waitActive(t)
	if _, ok := a.wait(time.Minute); !ok {
		t.Fatalf("the stopped daemon did not exit")
	}
	got, err := os.ReadFile(filepath.Join(s.mnt, "f"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("after recovery: %q, %v; want %q", got, err, want)
	}
	if n := mountCount(s.mnt); n != 1 {
		t.Errorf("%d mounts on %s, want 1", n, s.mnt)
	}
	b.signal(syscall.SIGTERM)
	if code, _ := b.wait(time.Minute); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, b.log())
	}
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	if !processAlive(c.Process.Pid) {
		t.Fatal("a running child is not alive")
	}
	c.Process.Signal(syscall.SIGSTOP)
	if !processAlive(c.Process.Pid) {
		t.Error("a stopped child is not alive")
	}
	c.Process.Signal(syscall.SIGKILL)
	// Until Wait reaps it, the child is a zombie: not alive.
	deadline := time.Now().Add(time.Minute)
	for processAlive(c.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("a killed child still alive after a minute")
		}
		time.Sleep(time.Millisecond)
	}
	c.Wait()
	if processAlive(c.Process.Pid) {
		t.Error("a reaped child is alive")
	}
}
