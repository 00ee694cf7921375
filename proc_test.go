package main

// Helpers of the process-level tests (cli_test.go, crash_test.go): they run
// the dcache binary as a user does, as child processes, and watch what it
// prints, what it leaves on disk and what the kernel's mount table says.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binEnv names the binary under test; `make test` sets it to bin/dcache.
const binEnv = "DCACHE_TEST_BIN"

// builtBin is the binary built for this test process when binEnv is unset.
var builtBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin.dir != "" {
		os.RemoveAll(builtBin.dir)
	}
	os.Exit(code)
}

// dcacheBin returns the path of the dcache binary: $DCACHE_TEST_BIN, or one
// built from this package once per test process.
func dcacheBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(binEnv); p != "" {
		return p
	}
	builtBin.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			builtBin.err = fmt.Errorf("%s is unset and no go tool is on PATH: %w", binEnv, err)
			return
		}
		if builtBin.dir, builtBin.err = os.MkdirTemp("", "dcache-test-bin-"); builtBin.err != nil {
			return
		}
		builtBin.path = filepath.Join(builtBin.dir, "dcache")
		out, err := exec.Command(goTool, "build", "-o", builtBin.path, ".").CombinedOutput()
		if err != nil {
			builtBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if builtBin.err != nil {
		t.Fatal(builtBin.err)
	}
	return builtBin.path
}

// requireFUSE skips tests that mount when this machine cannot.
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting with allow_other needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// childEnv is the environment of dcache children: this process's, without
// DCACHE_* variables (dcache refuses unknown ones, such as DCACHE_TEST_BIN),
// plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DCACHE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is how a dcache command ended.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// site is one dcache installation of a test: a data dir, a mount point and
// the flags every command gets.
type site struct {
	t     testing.TB
	dir   string   // the test's directory
	data  string   // data dir
	mnt   string   // mount point (created)
	flags []string // config flags of every command

	mu      sync.Mutex
	daemons []*daemon
}

// smallFlags keep the cache and the log small. replicas is the value of
// --log.replicas (PATH:TYPE:SIZE,...); "" is one 64MiB replica DATA/log.
func smallFlags(data, replicas string) []string {
	if replicas == "" {
		replicas = filepath.Join(data, "log") + ":ssd:64MiB"
	}
	return []string{
		"--data-dir", data,
		"--cache.size", "64MiB",
		"--quota.dirty_bytes", "32MiB",
		"--flush.segment_size", "4MiB",
		"--log.replicas", replicas,
	}
}

// newSite makes a test directory with a mount point, and flags for a small
// cache and log; the data dir is not created.
func newSite(t testing.TB) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{t: t, dir: dir, data: filepath.Join(dir, "data"), mnt: filepath.Join(dir, "mnt")}
	if err := os.Mkdir(s.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s.flags = smallFlags(s.data, "")
	t.Cleanup(s.cleanup)
	return s
}

// cleanup kills what a failed test left running and detaches its mounts,
// so that t.TempDir can be removed.
func (s *site) cleanup() {
	s.mu.Lock()
	ds := s.daemons
	s.mu.Unlock()
	for _, d := range ds {
		d.kill()
	}
	for _, mnt := range []string{s.mnt, filepath.Join(s.dir, "mnt2")} {
		for mountCount(mnt) > 0 {
			if pid, _ := readLock(s.data); pid > 0 && processAlive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			// MNT_FORCE aborts the connection, releasing a daemon stuck
			// on its own mount.
			if err := syscall.Unmount(mnt, syscall.MNT_FORCE|syscall.MNT_DETACH); err != nil {
				s.t.Logf("cleanup: detach %s: %v", mnt, err)
				break
			}
		}
	}
	for _, d := range ds {
		if _, ok := d.wait(time.Minute); !ok {
			s.t.Errorf("cleanup: dcache pid %d did not exit", d.pid)
		}
	}
}

// command builds a dcache command line: the subcommand, the site's flags
// when it takes config flags, then args.
func (s *site) command(sub string, args ...string) *exec.Cmd {
	s.t.Helper()
	all := []string{sub}
	if sub == "mount" || sub == "format" {
		all = append(all, s.flags...)
	}
	all = append(all, args...)
	c := exec.Command(dcacheBin(s.t), all...)
	c.Env = childEnv()
	c.Dir = s.dir
	return c
}

// run runs a dcache command to completion.
func (s *site) run(sub string, args ...string) result {
	s.t.Helper()
	return runCmd(s.t, s.command(sub, args...))
}

func runCmd(t testing.TB, c *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v\n%s", c.Args, err, r)
	}
	return r
}

// daemon is a foreground "dcache mount" child. Its stderr (the log) is kept
// in memory and in a file of the test directory.
type daemon struct {
	cmd  *exec.Cmd
	pid  int
	path string // copy of the log

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced when a line arrives or the process ends
	exited  bool
	state   *os.ProcessState
}

// start starts "dcache mount [extra] MNT" in the foreground.
func (s *site) start(extra ...string) *daemon {
	s.t.Helper()
	d, err := s.startErr(extra...)
	if err != nil {
		s.t.Fatal(err)
	}
	return d
}

func (s *site) startErr(extra ...string) (*daemon, error) {
	args := append(append([]string{}, extra...), s.mnt)
	c := s.command("mount", args...)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c.Stdout, c.Stderr = w, w
	if err := c.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	w.Close()
	s.mu.Lock()
	d := &daemon{cmd: c, pid: c.Process.Pid, changed: make(chan struct{}),
		path: filepath.Join(s.dir, fmt.Sprintf("daemon-%d.log", len(s.daemons)))}
	s.daemons = append(s.daemons, d)
	s.mu.Unlock()
	logf, _ := os.Create(d.path)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if logf != nil {
				fmt.Fprintln(logf, line)
			}
			d.mu.Lock()
			d.lines = append(d.lines, line)
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
		r.Close()
		if logf != nil {
			logf.Close()
		}
		st, _ := c.Process.Wait()
		d.mu.Lock()
		d.exited, d.state = true, st
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}()
	return d, nil
}

// waitLine waits until a line matching re is logged and returns it; ""
// when the process ended first or timeout passed.
func (d *daemon) waitLine(re *regexp.Regexp, timeout time.Duration) string {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		d.mu.Lock()
		for ; seen < len(d.lines); seen++ {
			if re.MatchString(d.lines[seen]) {
				l := d.lines[seen]
				d.mu.Unlock()
				return l
			}
		}
		ended, ch := d.exited, d.changed
		d.mu.Unlock()
		if ended {
			return ""
		}
		select {
		case <-ch:
		case <-deadline.C:
			return ""
		}
	}
}

var activeLine = regexp.MustCompile(`state=active`)

// waitActive waits until the mount is serving (the "active" lifecycle
// line, logged once the kernel has answered the mount's INIT).
func (d *daemon) waitActive(t testing.TB) {
	t.Helper()
	if d.waitLine(activeLine, 2*time.Minute) == "" {
		d.kill()
		t.Fatalf("dcache mount (pid %d) did not become active; exit %v; log:\n%s", d.pid, d.exitState(), d.log())
	}
}

// wait waits for the process to end and returns its exit code (-1 when a
// signal ended it); 0, false when it is still running after timeout.
func (d *daemon) wait(timeout time.Duration) (int, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		ended, st, ch := d.exited, d.state, d.changed
		d.mu.Unlock()
		if ended {
			if st == nil {
				return -1, true
			}
			return st.ExitCode(), true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return 0, false
		}
	}
}

// kill sends SIGKILL and waits until the process is gone or a zombie. A
// daemon killed while one of its threads waited on a request to its own
// mount (go-fuse does that while mounting) stays a zombie, its mount's
// connection open and hung, until something aborts that connection: the
// next dcache mount of the point, or cleanup. wait reports the full exit.
func (d *daemon) kill() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	for !d.ended() && processAlive(d.pid) {
		time.Sleep(2 * time.Millisecond)
	}
}

// ended reports whether the process has exited and been reaped.
func (d *daemon) ended() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exited
}

func (d *daemon) signal(sig syscall.Signal) { d.cmd.Process.Signal(sig) }

func (d *daemon) exitState() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.exited {
		return "running"
	}
	if d.state == nil {
		return "unknown"
	}
	return d.state.String()
}

// log is everything the daemon printed so far.
func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

func (d *daemon) logLines() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.lines...)
}

// mountCount is the number of mounts stacked on dir in this process's
// mount namespace, read straight from /proc/self/mountinfo.
func mountCount(dir string) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			n++
		}
	}
	return n
}

// replayedRe reads the record count of the engine's recovery summary.
var replayedRe = regexp.MustCompile(`msg=recovered .*\breplayed=(\d+)`)

// replayed returns the number of log records the recovery in lines
// replayed, or -1 when no recovery summary is there.
func replayed(lines []string) int {
	for _, l := range lines {
		if m := replayedRe.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return -1
}
