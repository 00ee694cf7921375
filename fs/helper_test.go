package fs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The helper process: tests that need a second process (another user, or
// just another lock owner) re-execute the test binary with
// -test.run=^TestHelperProcess$ and the action named in helperEnv. The child
// performs one system call sequence on the mount and prints one result line;
// the parent asserts on it.

const (
	helperEnv    = "DCACHE_FS_TEST_HELPER"
	helperResult = "helper-result:"
)

// testUid and testGid are the unprivileged user the tests act as; otherGid
// is a supplementary group of theirs, otherUid a second user.
const (
	testUid  = 1000
	testGid  = 1000
	otherUid = 1001
	otherGid = 1001
)

// TestHelperProcess is not a test: it is the child process of runHelper,
// and does nothing when run normally.
func TestHelperProcess(t *testing.T) {
	action := os.Getenv(helperEnv)
	if action == "" {
		return
	}
	var args []string
	for i, a := range os.Args {
		if a == "--" {
			args = os.Args[i+1:]
			break
		}
	}
	info, err := helperAction(action, args)
	errno := syscall.Errno(0)
	if err != nil && !errors.As(err, &errno) {
		fmt.Printf("%s error %q\n", helperResult, err.Error())
		return
	}
	fmt.Printf("%s errno %d info %s\n", helperResult, int(errno), info)
}

// helperAction runs one action in the child. It returns extra information
// for the parent (without spaces) and the first failing call's error.
func helperAction(action string, args []string) (string, error) {
	need := func(n int) {
		if len(args) != n {
			panic(fmt.Sprintf("helper %s: want %d arguments, have %q", action, n, args))
		}
	}
	num := func(s string, base int) int {
		v, err := strconv.ParseInt(s, base, 64)
		if err != nil {
			panic(err)
		}
		return int(v)
	}
	switch action {
	case "open": // path flags mode(octal) data: open, write data unless empty, close
		need(4)
		fd, err := unix.Open(args[0], num(args[1], 0)|unix.O_CLOEXEC, uint32(num(args[2], 8)))
		if err != nil {
			return "", err
		}
		if args[3] != "" {
			if _, err := unix.Write(fd, []byte(args[3])); err != nil {
				unix.Close(fd)
				return "", err
			}
		}
		return "", unix.Close(fd)
	case "mkdir": // path mode(octal)
		need(2)
		return "", unix.Mkdir(args[0], uint32(num(args[1], 8)))
	case "unlink":
		need(1)
		return "", unix.Unlink(args[0])
	case "rename":
		need(2)
		return "", unix.Rename(args[0], args[1])
	case "truncate": // path size
		need(2)
		return "", unix.Truncate(args[0], int64(num(args[1], 10)))
	case "ftruncate": // path size: through an fd opened for writing
		need(2)
		fd, err := unix.Open(args[0], unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		return "", unix.Ftruncate(fd, int64(num(args[1], 10)))
	case "chmod": // path mode(octal)
		need(2)
		return "", unix.Chmod(args[0], uint32(num(args[1], 8)))
	case "chown": // path uid gid (-1 leaves one alone)
		need(3)
		return "", unix.Chown(args[0], num(args[1], 10), num(args[2], 10))
	case "setlk": // path: try a whole-file write lock; info is the holder's pid
		need(1)
		fd, err := unix.Open(args[0], unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk); err != nil {
			return "", err
		}
		holder := "none"
		if lk.Type != unix.F_UNLCK {
			holder = strconv.Itoa(int(lk.Pid))
		}
		lk = unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		return holder, unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)
	case "flock": // path: try an exclusive flock without waiting
		need(1)
		fd, err := unix.Open(args[0], unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		return "", unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	}
	panic("helper: unknown action " + action)
}

// helper runs helper processes against one mount.
type helper struct {
	t   *testing.T
	bin string // the test binary, where every user may run it
}

// newHelper makes the mount reachable and the test binary runnable for
// unprivileged users: t.TempDir's directories are private to root.
func newHelper(t *testing.T, tm *testMount) *helper {
	t.Helper()
	for _, d := range []string{filepath.Dir(tm.dir), tm.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(tm.dir, "helper.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return &helper{t: t, bin: bin}
}

// cred is who the helper runs as; nil is root.
type cred = syscall.Credential

// user is the unprivileged test user with the given supplementary groups.
func user(uid, gid uint32, groups ...uint32) *cred {
	return &cred{Uid: uid, Gid: gid, Groups: groups}
}

// run runs action as c and returns the errno of its first failing call and
// its extra information.
func (h *helper) run(c *cred, action string, args ...string) (syscall.Errno, string) {
	h.t.Helper()
	cmd := exec.Command(h.bin, append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	// A race-enabled binary sleeps a second before exiting unless told
	// not to; the helper's races would still be reported.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), helperEnv+"="+action, "GORACE="+gorace)
	cmd.Dir = "/"
	if c != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		h.t.Fatalf("helper %s %q: %v\n%s%s", action, args, err, out, stderr.Bytes())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), helperResult)
		if !ok {
			continue
		}
		var errno int
		var info string
		if _, err := fmt.Sscanf(line, " errno %d info %s", &errno, &info); err != nil {
			if _, err2 := fmt.Sscanf(line, " errno %d info", &errno); err2 != nil {
				h.t.Fatalf("helper %s %q: %s", action, args, line)
			}
		}
		return syscall.Errno(errno), info
	}
	h.t.Fatalf("helper %s %q printed no result:\n%s%s", action, args, out, stderr.Bytes())
	return 0, ""
}

// expect runs action as c and fails the test unless it ends with want
// (0: success).
func (h *helper) expect(c *cred, want syscall.Errno, action string, args ...string) {
	h.t.Helper()
	got, _ := h.run(c, action, args...)
	if got != want {
		h.t.Errorf("%s %q as %s: got %s, want %s", action, args, who(c), errnoName(got), errnoName(want))
	}
}

func who(c *cred) string {
	if c == nil {
		return "root"
	}
	return fmt.Sprintf("uid %d gid %d groups %v", c.Uid, c.Gid, c.Groups)
}

func errnoName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	return fmt.Sprintf("%s (%d)", unix.ErrnoName(e), int(e))
}
