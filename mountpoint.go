package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	point  string
	fstype string
	source string
}

// findMount returns the mount whose mount point is dir, if any.
func findMount(dir string) (mountEntry, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountEntry{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var found mountEntry
	ok := false
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		if unescapeMount(fields[4]) == dir {
			// The last match wins: mounts stack.
			found = mountEntry{point: dir, fstype: fields[sep+1], source: unescapeMount(fields[sep+2])}
			ok = true
		}
	}
	return found, ok, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// prepareMountpoint checks that dir can be mounted on: it exists, is a
// directory and is not mounted already. A stale mount left by a killed
// daemon ("transport endpoint is not connected") is detached, and said so.
func prepareMountpoint(dir string, log *logrus.Entry) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	detach := func() error {
		log.WithField("mountpoint", abs).Warn("found a stale mount left by a daemon that died; detaching it")
		if err := detachStale(abs); err != nil {
			return fmt.Errorf("mount point %s: stale mount could not be detached: %w", abs, err)
		}
		return nil
	}
	if m, ok, err := findMount(abs); err == nil && ok {
		if !isStale(abs, m) {
			return "", fmt.Errorf("mount point %s is already mounted (%s from %s)", abs, m.fstype, m.source)
		}
		if err := detach(); err != nil {
			return "", err
		}
	}
	var st syscall.Stat_t
	err = syscall.Stat(abs, &st)
	if errors.Is(err, syscall.ENOTCONN) {
		// A stale mount that /proc/self/mountinfo names differently (dir
		// reached through a symlink).
		if err := detach(); err != nil {
			return "", err
		}
		err = syscall.Stat(abs, &st)
	}
	if err != nil {
		if os.IsNotExist(err) {
			return "", &usageError{fmt.Sprintf("mount point %s does not exist", abs)}
		}
		return "", fmt.Errorf("mount point %s: %w", abs, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return "", &usageError{fmt.Sprintf("mount point %s is not a directory", abs)}
	}
	if m, ok, err := findMount(abs); err == nil && ok {
		return "", fmt.Errorf("mount point %s is already mounted (%s from %s)", abs, m.fstype, m.source)
	}
	return abs, nil
}

// isStale reports whether the FUSE mount m on dir has lost its daemon.
//
// For a dcache mount, the data dir's lock names the daemon: a clean stop
// empties the lock file, so a pid left there that no longer runs (or is a
// zombie) is a daemon that died. Other FUSE mounts are probed with
// statfs(2), which always goes to the daemon and fails with ENOTCONN on a
// dead connection; stat(2) is no test, as the kernel answers it from its
// attribute cache for up to fuse.attr_timeout after the daemon died.
func isStale(dir string, m mountEntry) bool {
	if !strings.HasPrefix(m.fstype, "fuse") {
		return false
	}
	if m.fstype == "fuse.dcache" {
		if pid, lockedMnt := readLock(m.source); pid > 0 && lockedMnt == dir {
			return !processAlive(pid)
		}
	}
	var sfs syscall.Statfs_t
	return errors.Is(syscall.Statfs(dir, &sfs), syscall.ENOTCONN)
}

// detachStale removes the stale FUSE mount on dir. MNT_FORCE aborts the
// FUSE connection first: a daemon killed while one of its own threads was
// waiting on a request to its own mount (go-fuse opens a file in the mount
// while mounting) cannot finish dying, and keeps the connection open and
// every request on it waiting, until the connection is aborted.
func detachStale(dir string) error {
	return syscall.Unmount(dir, syscall.MNT_FORCE|syscall.MNT_DETACH)
}
