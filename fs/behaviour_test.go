package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dcache/dcache/cachelayer"
)

func testConfig() cachelayer.Config { return cachelayer.Config{CacheSize: 64 << 20} }

// TestHardLinks checks that the names of a file are one inode: the same
// st_ino and the right st_nlink under every name, through link, unlink and
// rename over a link, and after a remount.
func TestHardLinks(t *testing.T) {
	tm := newTestMount(t, testConfig())
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(tm.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(tm.path("a/f"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	ino := lstat(t, tm.path("a/f")).Ino

	// check: exactly the names in names are links of ino, with nlink
	// len(names).
	check := func(when string, names ...string) {
		t.Helper()
		for _, n := range names {
			st := lstat(t, tm.path(n))
			if st.Ino != ino || st.Nlink != uint64(len(names)) {
				t.Errorf("%s: %s has ino %d nlink %d, want ino %d nlink %d", when, n, st.Ino, st.Nlink, ino, len(names))
			}
			checkContent(t, tm.path(n), "shared")
		}
	}
	link := func(old, new string) {
		t.Helper()
		if err := os.Link(tm.path(old), tm.path(new)); err != nil {
			t.Fatal(err)
		}
	}
	link("a/f", "a/g")
	link("a/f", "b/f")
	link("b/f", "b/h")
	check("after link", "a/f", "a/g", "b/f", "b/h")
	if err := os.Link(tm.path("a/f"), tm.path("b/h")); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("link onto an existing name: %v, want EEXIST", err)
	}
	if err := os.Link(tm.path("a"), tm.path("b/dirlink")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("link of a directory: %v, want EPERM", err)
	}

	if err := os.Remove(tm.path("a/g")); err != nil {
		t.Fatal(err)
	}
	check("after unlink", "a/f", "b/f", "b/h")

	// Rename over a link of the same file: POSIX says nothing happens.
	if err := os.Rename(tm.path("b/f"), tm.path("b/h")); err != nil {
		t.Fatal(err)
	}
	check("after rename onto another name of itself", "a/f", "b/f", "b/h")

	// Rename another file over one of the names.
	if err := os.WriteFile(tm.path("b/other"), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	otherIno := lstat(t, tm.path("b/other")).Ino
	if err := os.Rename(tm.path("b/other"), tm.path("b/h")); err != nil {
		t.Fatal(err)
	}
	check("after rename over a link", "a/f", "b/f")
	if st := lstat(t, tm.path("b/h")); st.Ino != otherIno || st.Nlink != 1 {
		t.Errorf("b/h after rename: ino %d nlink %d, want %d and 1", st.Ino, st.Nlink, otherIno)
	}

	// Rename a link to a new name in another directory.
	if err := os.Rename(tm.path("b/f"), tm.path("a/moved")); err != nil {
		t.Fatal(err)
	}
	check("after rename of a link", "a/f", "a/moved")

	// An open descriptor sees the link count drop to zero and keeps the data.
	link("a/f", "b/last")
	fd, err := os.Open(tm.path("b/last"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a/f", "a/moved"} {
		if err := os.Remove(tm.path(n)); err != nil {
			t.Fatal(err)
		}
	}
	check("after unlinking the others", "b/last")
	if err := os.Remove(tm.path("b/last")); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 0 {
		t.Errorf("open unlinked file: nlink %d, want 0", st.Nlink)
	}
	buf := make([]byte, 16)
	if n, err := fd.ReadAt(buf, 0); string(buf[:n]) != "shared" {
		t.Errorf("open unlinked file reads %q (%v)", buf[:n], err)
	}
	fd.Close()

	// Link counts survive a remount.
	if err := os.WriteFile(tm.path("a/r"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	ino = lstat(t, tm.path("a/r")).Ino
	link("a/r", "a/r2")
	link("a/r", "b/r3")
	link("a/r", "b/gone")
	if err := os.Remove(tm.path("b/gone")); err != nil {
		t.Fatal(err)
	}
	check("before remount", "a/r", "a/r2", "b/r3")
	tm.remount()
	check("after remount", "a/r", "a/r2", "b/r3")
	if err := os.Remove(tm.path("a/r2")); err != nil {
		t.Fatal(err)
	}
	tm.remount()
	check("after unlink and remount", "a/r", "b/r3")

	// Directory link counts: 2 + subdirectories.
	if st := lstat(t, tm.path("a")); st.Nlink != 2 {
		t.Errorf("a: nlink %d, want 2", st.Nlink)
	}
	for _, d := range []string{"a/x", "a/y", "a/y/z"} {
		if err := os.Mkdir(tm.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tm.path("a/y"), tm.path("b/y")); err != nil {
		t.Fatal(err)
	}
	for _, remount := range []bool{false, true} {
		if remount {
			tm.remount()
		}
		for d, want := range map[string]uint64{"a": 3, "a/x": 2, "b": 3, "b/y": 3} {
			if st := lstat(t, tm.path(d)); st.Nlink != want {
				t.Errorf("%s (remounted %v): nlink %d, want %d", d, remount, st.Nlink, want)
			}
		}
	}

	// A directory renamed over an empty one, and a directory exchanged
	// with a file in another directory.
	if err := os.Mkdir(tm.path("b/empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.path("b/file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	xIno := lstat(t, tm.path("a/x")).Ino
	// (os.Rename refuses a directory as the target by itself.)
	if err := unix.Rename(tm.path("a/x"), tm.path("b/empty")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tm.path("b/y"), unix.AT_FDCWD, tm.path("a/file"), unix.RENAME_EXCHANGE); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("exchange with a missing name: %v, want ENOENT", err)
	}
	if err := os.WriteFile(tm.path("a/file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tm.path("b/y"), unix.AT_FDCWD, tm.path("a/file"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	for _, remount := range []bool{false, true} {
		if remount {
			tm.remount()
		}
		for d, want := range map[string]uint64{"a": 3, "a/file": 3, "b": 3, "b/empty": 2, "b/y": 1, "b/file": 1} {
			if st := lstat(t, tm.path(d)); st.Nlink != want {
				t.Errorf("after rename and exchange (remounted %v): %s nlink %d, want %d", remount, d, st.Nlink, want)
			}
		}
		if st := lstat(t, tm.path("b/empty")); st.Ino != xIno {
			t.Errorf("b/empty is ino %d, want the renamed a/x %d", st.Ino, xIno)
		}
		// ".." of the moved directories names their new parents.
		for d, parent := range map[string]string{"b/empty": "b", "a/file": "a", "a/file/z": "a/file"} {
			if got, want := dotdot(t, tm.path(d)), lstat(t, tm.path(parent)).Ino; got != want {
				t.Errorf("remounted %v: %s/.. is ino %d, want %d (%s)", remount, d, got, want, parent)
			}
		}
	}
}

// dotdot returns the inode number readdir reports for dir's ".." entry.
func dotdot(t *testing.T, dir string) uint64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("%s: no .. entry", dir)
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			ino := binary.LittleEndian.Uint64(b)
			reclen := int(binary.LittleEndian.Uint16(b[16:]))
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if string(name) == ".." {
				return ino
			}
			b = b[reclen:]
		}
	}
}

// ts is a timespec, or UTIME_OMIT / UTIME_NOW in Nsec.
func ts(sec int64, nsec int64) unix.Timespec { return unix.Timespec{Sec: sec, Nsec: nsec} }

func utimens(t *testing.T, path string, atime, mtime unix.Timespec) {
	t.Helper()
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{atime, mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatalf("utimensat %s: %v", path, err)
	}
}

func sameTime(a syscall.Timespec, b unix.Timespec) bool { return a.Sec == b.Sec && a.Nsec == b.Nsec }

func stdTime(a syscall.Timespec) time.Time { return time.Unix(a.Sec, a.Nsec) }

// clock reads a clock for comparing timestamps: the kernel stamps times
// with the coarse clock, which may lag the fine one by a tick.
func clock(t *testing.T, id int32) time.Time {
	var c unix.Timespec
	if err := unix.ClockGettime(id, &c); err != nil {
		t.Fatal(err)
	}
	return time.Unix(c.Sec, c.Nsec)
}

// since returns the earliest time a timestamp taken from now on may carry.
func since(t *testing.T) time.Time { return clock(t, unix.CLOCK_REALTIME_COARSE) }

// until returns the latest time a timestamp taken so far may carry.
func until(t *testing.T) time.Time { return clock(t, unix.CLOCK_REALTIME) }

// nextTick waits until timestamps taken from now on are later than after.
func nextTick(t *testing.T, after syscall.Timespec) {
	for !since(t).After(stdTime(after)) {
		time.Sleep(time.Millisecond)
	}
}

func inRange(t *testing.T, what string, got syscall.Timespec, lo, hi time.Time) {
	t.Helper()
	if g := stdTime(got); g.Before(lo) || g.After(hi) {
		t.Errorf("%s: %v, want within [%v, %v]", what, g, lo, hi)
	}
}

// TestTimes checks utimensat exactly (nanoseconds, UTIME_OMIT, UTIME_NOW),
// that writes and truncates move mtime and ctime, and that times survive a
// remount.
func TestTimes(t *testing.T) {
	tm := newTestMount(t, testConfig())
	f := tm.path("f")
	if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", tm.path("link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tm.path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("Explicit", func(t *testing.T) {
		for _, p := range []string{"f", "link", "dir"} {
			a, m := ts(1_000_000_001, 123_456_789), ts(1_500_000_000, 987_654_321)
			utimens(t, tm.path(p), a, m)
			st := lstat(t, tm.path(p))
			if !sameTime(st.Atim, a) || !sameTime(st.Mtim, m) {
				t.Errorf("%s: atime %v mtime %v, want %v %v", p, st.Atim, st.Mtim, a, m)
			}
		}
	})

	t.Run("Omit", func(t *testing.T) {
		a, m := ts(1_111_111_111, 111_111_111), ts(1_222_222_222, 222_222_222)
		utimens(t, f, a, m)
		before := lstat(t, f)
		nextTick(t, before.Ctim)
		lo := since(t)
		m2 := ts(1_333_333_333, 333_333_333)
		utimens(t, f, ts(0, unix.UTIME_OMIT), m2)
		st := lstat(t, f)
		if !sameTime(st.Atim, a) {
			t.Errorf("atime with UTIME_OMIT: %v, want %v", st.Atim, a)
		}
		if !sameTime(st.Mtim, m2) {
			t.Errorf("mtime: %v, want %v", st.Mtim, m2)
		}
		inRange(t, "ctime after utimensat", st.Ctim, lo, until(t))

		a2 := ts(1_444_444_444, 444_444_444)
		utimens(t, f, a2, ts(0, unix.UTIME_OMIT))
		st = lstat(t, f)
		if !sameTime(st.Atim, a2) || !sameTime(st.Mtim, m2) {
			t.Errorf("after omitting mtime: atime %v mtime %v, want %v %v", st.Atim, st.Mtim, a2, m2)
		}
		// Both omitted: nothing changes, not even ctime.
		ctime := st.Ctim
		nextTick(t, ctime)
		utimens(t, f, ts(0, unix.UTIME_OMIT), ts(0, unix.UTIME_OMIT))
		st = lstat(t, f)
		if !sameTime(st.Atim, a2) || !sameTime(st.Mtim, m2) || st.Ctim != ctime {
			t.Errorf("after omitting both: atime %v mtime %v ctime %v, want %v %v %v", st.Atim, st.Mtim, st.Ctim, a2, m2, ctime)
		}
	})

	t.Run("Now", func(t *testing.T) {
		old := ts(1_000_000_000, 5)
		utimens(t, f, old, old)
		lo := since(t)
		utimens(t, f, ts(0, unix.UTIME_NOW), ts(0, unix.UTIME_OMIT))
		hi := until(t)
		st := lstat(t, f)
		inRange(t, "atime after UTIME_NOW", st.Atim, lo, hi)
		if !sameTime(st.Mtim, old) {
			t.Errorf("mtime omitted: %v, want %v", st.Mtim, old)
		}
		lo = since(t)
		utimens(t, f, ts(0, unix.UTIME_OMIT), ts(0, unix.UTIME_NOW))
		hi = until(t)
		st = lstat(t, f)
		inRange(t, "mtime after UTIME_NOW", st.Mtim, lo, hi)
		inRange(t, "ctime after UTIME_NOW", st.Ctim, lo, hi)
		// utimes(path, NULL): both now.
		utimens(t, f, old, old)
		lo = since(t)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, f, nil, 0); err != nil {
			t.Fatal(err)
		}
		hi = until(t)
		st = lstat(t, f)
		inRange(t, "atime after utimensat(NULL)", st.Atim, lo, hi)
		inRange(t, "mtime after utimensat(NULL)", st.Mtim, lo, hi)
	})

	t.Run("WriteAndTruncate", func(t *testing.T) {
		old := ts(1_000_000_000, 7)
		utimens(t, f, old, old)
		// A write moves mtime and ctime, and leaves atime.
		nextTick(t, lstat(t, f).Ctim)
		lo := since(t)
		fd, err := os.OpenFile(f, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fd.WriteAt([]byte("more data"), 2); err != nil {
			t.Fatal(err)
		}
		if err := fd.Close(); err != nil {
			t.Fatal(err)
		}
		hi := until(t)
		st := lstat(t, f)
		inRange(t, "mtime after write", st.Mtim, lo, hi)
		inRange(t, "ctime after write", st.Ctim, lo, hi)
		if !sameTime(st.Atim, old) {
			t.Errorf("atime after write: %v, want %v", st.Atim, old)
		}

		// truncate(2) moves both.
		utimens(t, f, old, old)
		nextTick(t, lstat(t, f).Ctim)
		lo = since(t)
		if err := os.Truncate(f, 3); err != nil {
			t.Fatal(err)
		}
		hi = until(t)
		st = lstat(t, f)
		inRange(t, "mtime after truncate", st.Mtim, lo, hi)
		inRange(t, "ctime after truncate", st.Ctim, lo, hi)

		// ftruncate through an open descriptor, extending.
		utimens(t, f, old, old)
		nextTick(t, lstat(t, f).Ctim)
		lo = since(t)
		fd, err = os.OpenFile(f, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := fd.Truncate(10000); err != nil {
			t.Fatal(err)
		}
		if err := fd.Close(); err != nil {
			t.Fatal(err)
		}
		hi = until(t)
		st = lstat(t, f)
		inRange(t, "mtime after ftruncate", st.Mtim, lo, hi)
		inRange(t, "ctime after ftruncate", st.Ctim, lo, hi)
		if st.Size != 10000 {
			t.Errorf("size after ftruncate %d", st.Size)
		}

		// Times of a written file survive a remount exactly, and a write
		// whose pages the kernel flushes at unmount does not move them.
		fd, err = os.OpenFile(f, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fd.WriteAt([]byte("x"), 0); err != nil {
			t.Fatal(err)
		}
		if err := fd.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := fd.Close(); err != nil {
			t.Fatal(err)
		}
		want := lstat(t, f)
		tm.remount()
		st = lstat(t, f)
		if st.Atim != want.Atim || st.Mtim != want.Mtim || st.Ctim != want.Ctim {
			t.Errorf("after remount: times %v %v %v, want %v %v %v", st.Atim, st.Mtim, st.Ctim, want.Atim, want.Mtim, want.Ctim)
		}
	})

	t.Run("Fallocate", func(t *testing.T) {
		old := ts(1_000_000_000, 11)
		for _, c := range []struct {
			name     string
			mode     uint32
			off, n   int64
			wantSize int64
		}{
			{"extend", 0, 0, 30000, 30000},
			{"punch", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 4096, 8192, 30000},
			{"zero-range", unix.FALLOC_FL_ZERO_RANGE, 0, 100, 30000},
		} {
			utimens(t, f, old, old)
			nextTick(t, lstat(t, f).Ctim)
			lo := since(t)
			fd, err := os.OpenFile(f, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Fallocate(int(fd.Fd()), c.mode, c.off, c.n); err != nil {
				t.Fatalf("fallocate %s: %v", c.name, err)
			}
			if err := fd.Close(); err != nil {
				t.Fatal(err)
			}
			hi := until(t)
			st := lstat(t, f)
			if st.Size != c.wantSize {
				t.Errorf("%s: size %d, want %d", c.name, st.Size, c.wantSize)
			}
			inRange(t, "mtime after fallocate "+c.name, st.Mtim, lo, hi)
			inRange(t, "ctime after fallocate "+c.name, st.Ctim, lo, hi)
			tm.remount()
			if got := lstat(t, f); got.Mtim != st.Mtim || got.Ctim != st.Ctim || got.Size != st.Size {
				t.Errorf("%s: after remount mtime %v ctime %v size %d, want %v %v %d", c.name, got.Mtim, got.Ctim, got.Size, st.Mtim, st.Ctim, st.Size)
			}
		}
	})

	t.Run("DirectoryChanges", func(t *testing.T) {
		d := tm.path("dir")
		old := ts(1_000_000_000, 9)
		for _, op := range []struct {
			name string
			fn   func() error
		}{
			{"create", func() error { return os.WriteFile(d+"/c", nil, 0o644) }},
			{"mkdir", func() error { return os.Mkdir(d+"/m", 0o755) }},
			{"rename", func() error { return os.Rename(d+"/c", d+"/c2") }},
			{"unlink", func() error { return os.Remove(d + "/c2") }},
			{"rmdir", func() error { return os.Remove(d + "/m") }},
		} {
			utimens(t, d, old, old)
			nextTick(t, lstat(t, d).Ctim)
			lo := since(t)
			if err := op.fn(); err != nil {
				t.Fatalf("%s: %v", op.name, err)
			}
			hi := until(t)
			st := lstat(t, d)
			inRange(t, "dir mtime after "+op.name, st.Mtim, lo, hi)
			inRange(t, "dir ctime after "+op.name, st.Ctim, lo, hi)
		}
	})

	t.Run("Remount", func(t *testing.T) {
		want := map[string][2]unix.Timespec{
			"f":    {ts(1_600_000_000, 1), ts(1_700_000_000, 999_999_999)},
			"link": {ts(1_600_000_001, 2), ts(1_700_000_001, 3)},
			"dir":  {ts(1_600_000_002, 4), ts(-1, 500_000_000)},
		}
		ctimes := map[string]syscall.Timespec{}
		for p, w := range want {
			utimens(t, tm.path(p), w[0], w[1])
			ctimes[p] = lstat(t, tm.path(p)).Ctim
		}
		tm.remount()
		for p, w := range want {
			st := lstat(t, tm.path(p))
			if !sameTime(st.Atim, w[0]) || !sameTime(st.Mtim, w[1]) || st.Ctim != ctimes[p] {
				t.Errorf("%s after remount: %v %v %v, want %v %v %v", p, st.Atim, st.Mtim, st.Ctim, w[0], w[1], ctimes[p])
			}
		}
	})
}

// TestNameTooLong checks the 255-byte limit on names.
func TestNameTooLong(t *testing.T) {
	tm := newTestMount(t, testConfig())
	ok := strings.Repeat("n", cachelayer.MaxNameLen)
	long := ok + "x"
	if err := os.WriteFile(tm.path("src"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		op string
		fn func(name string) error
	}{
		{"create", func(n string) error { return os.WriteFile(tm.path(n), []byte("c"), 0o644) }},
		{"mkdir", func(n string) error { return os.Mkdir(tm.path("d"+n[1:]), 0o755) }},
		{"symlink", func(n string) error { return os.Symlink("target", tm.path("s"+n[1:])) }},
		{"link", func(n string) error { return os.Link(tm.path("src"), tm.path("l"+n[1:])) }},
		{"mknod", func(n string) error { return syscall.Mkfifo(tm.path("p"+n[1:]), 0o644) }},
		{"rename", func(n string) error {
			if err := os.WriteFile(tm.path("r"), nil, 0o644); err != nil {
				return err
			}
			return os.Rename(tm.path("r"), tm.path("r"+n[1:]))
		}},
		{"lookup", func(n string) error { _, err := os.Lstat(tm.path("q" + n[1:])); return err }},
		{"unlink", func(n string) error { return os.Remove(tm.path("u" + n[1:])) }},
		{"getxattr", func(n string) error {
			_, err := unix.Lgetxattr(tm.path("x"+n[1:]), "user.a", nil)
			return err
		}},
	} {
		t.Run(tc.op, func(t *testing.T) {
			if err := tc.fn(long); !errors.Is(err, syscall.ENAMETOOLONG) {
				t.Errorf("%s with a %d-byte name: %v, want ENAMETOOLONG", tc.op, len(long), err)
			}
			err := tc.fn(ok)
			switch tc.op {
			case "lookup", "unlink", "getxattr":
				if !errors.Is(err, syscall.ENOENT) {
					t.Errorf("%s with a %d-byte name: %v, want ENOENT", tc.op, len(ok), err)
				}
			default:
				if err != nil {
					t.Errorf("%s with a %d-byte name: %v", tc.op, len(ok), err)
				}
			}
		})
	}
	// The 255-byte names are listed and survive a remount.
	tm.remount()
	ents, err := os.ReadDir(tm.mnt)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if len(e.Name()) == cachelayer.MaxNameLen {
			n++
			if _, err := os.Lstat(tm.path(e.Name())); err != nil {
				t.Error(err)
			}
		}
	}
	if n != 6 {
		t.Errorf("%d entries with %d-byte names after remount, want 6", n, cachelayer.MaxNameLen)
	}
}

// TestStatfs checks that statfs reports the backend directory's filesystem.
func TestStatfs(t *testing.T) {
	tm := newTestMount(t, testConfig())
	// Some data, then a destage so that nothing is dirty.
	if err := os.WriteFile(tm.path("f"), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tm.eng.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var be1, mnt, be2 unix.Statfs_t
	for _, s := range []struct {
		path string
		st   *unix.Statfs_t
	}{{tm.dir + "/backend", &be1}, {tm.mnt, &mnt}, {tm.dir + "/backend", &be2}} {
		if err := unix.Statfs(s.path, s.st); err != nil {
			t.Fatal(err)
		}
	}
	bytesOf := func(blocks uint64, st *unix.Statfs_t) uint64 { return blocks * uint64(st.Frsize) }
	if got, want := bytesOf(mnt.Blocks, &mnt), bytesOf(be1.Blocks, &be1); got/(1<<20) != want/(1<<20) {
		t.Errorf("total %d bytes, backend's filesystem has %d", got, want)
	}
	// Other processes write to the backend's filesystem too: the mount's
	// free space is that of the backend read just before or after, give or
	// take what may have changed meanwhile.
	const slack = 64 << 20
	for _, f := range []struct {
		name          string
		mnt, be1, be2 uint64
	}{
		{"bavail", bytesOf(mnt.Bavail, &mnt), bytesOf(be1.Bavail, &be1), bytesOf(be2.Bavail, &be2)},
		{"bfree", bytesOf(mnt.Bfree, &mnt), bytesOf(be1.Bfree, &be1), bytesOf(be2.Bfree, &be2)},
	} {
		lo, hi := min(f.be1, f.be2), max(f.be1, f.be2)
		if f.mnt+slack < lo || f.mnt > hi+slack {
			t.Errorf("%s: %d bytes, backend's filesystem %d..%d", f.name, f.mnt, lo, hi)
		}
	}
	if mnt.Namelen != cachelayer.MaxNameLen {
		t.Errorf("f_namemax %d, want %d", mnt.Namelen, cachelayer.MaxNameLen)
	}
	if mnt.Bsize <= 0 || mnt.Frsize <= 0 {
		t.Errorf("block size %d, fragment size %d", mnt.Bsize, mnt.Frsize)
	}
	// Every object counts as a file.
	if mnt.Files <= mnt.Ffree || mnt.Files-mnt.Ffree < 2 {
		t.Errorf("files %d free %d: want at least the root and f in use", mnt.Files, mnt.Ffree)
	}
}

// TestSpecialFiles checks fifos, unix sockets and device nodes: made by
// mknod and bind, usable, and still of their type after a remount.
func TestSpecialFiles(t *testing.T) {
	tm := newTestMount(t, testConfig())
	fifo, sock, dev := tm.path("fifo"), tm.path("sock"), tm.path("null")
	if err := syscall.Mkfifo(fifo, 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	rdev := int(unix.Mkdev(1, 3))
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, rdev); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dev, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}

	// The fifo passes data (the kernel runs it, the mount names it).
	pipe := func() {
		t.Helper()
		f, err := os.OpenFile(fifo, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte("through the fifo")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := f.Read(buf)
		if err != nil || string(buf[:n]) != "through the fifo" {
			t.Errorf("fifo read %q, %v", buf[:n], err)
		}
	}
	pipe()
	// The socket takes connections.
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello"))
		c.Close()
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
		t.Errorf("socket read %q, %v", buf, err)
	}
	c.Close()

	check := func(when string) {
		t.Helper()
		for _, w := range []struct {
			path string
			mode uint32
		}{{fifo, syscall.S_IFIFO | 0o640}, {sock, syscall.S_IFSOCK}, {dev, syscall.S_IFCHR | 0o666}} {
			st := lstat(t, w.path)
			if w.mode&0o777 == 0 {
				st.Mode &^= 0o777 // a socket's bits are the umask's
			}
			if st.Mode != w.mode {
				t.Errorf("%s: %s mode %#o, want %#o", when, w.path, st.Mode, w.mode)
			}
			if w.path == dev && st.Rdev != uint64(rdev) {
				t.Errorf("%s: %s rdev %#x, want %#x", when, dev, st.Rdev, rdev)
			}
		}
		ents, err := os.ReadDir(tm.mnt)
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]os.FileMode{}
		for _, e := range ents {
			types[e.Name()] = e.Type()
		}
		want := map[string]os.FileMode{"fifo": os.ModeNamedPipe, "sock": os.ModeSocket, "null": os.ModeDevice | os.ModeCharDevice}
		for n, ty := range want {
			if types[n] != ty {
				t.Errorf("%s: readdir type of %s %v, want %v", when, n, types[n], ty)
			}
		}
	}
	check("before remount")
	l.Close()
	tm.remount()
	check("after remount")
	pipe()
	// The device node opens the device.
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.Write([]byte("discarded")); err != nil || n != 9 {
		t.Errorf("write to %s: %d %v", dev, n, err)
	}
	f.Close()
}

// seekChecks are lseek answers for a file; a negative want is the errno.
type seekCheck struct {
	whence int
	off    int64
	want   int64
}

func checkSeeks(t *testing.T, path, when string, checks []seekCheck) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range checks {
		got, err := unix.Seek(int(f.Fd()), c.off, c.whence)
		name := map[int]string{unix.SEEK_DATA: "SEEK_DATA", unix.SEEK_HOLE: "SEEK_HOLE"}[c.whence]
		if c.want < 0 {
			if !errors.Is(err, syscall.Errno(-c.want)) {
				t.Errorf("%s: lseek(%d, %s) = %d, %v, want %v", when, c.off, name, got, err, syscall.Errno(-c.want))
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: lseek(%d, %s) = %d, %v, want %d", when, c.off, name, got, err, c.want)
		}
	}
}

// TestSparse checks that holes read back as zeros and that SEEK_DATA and
// SEEK_HOLE find them, with the data in the cache and in the backend.
func TestSparse(t *testing.T) {
	tm := newTestMount(t, testConfig())
	const (
		mib  = 1 << 20
		size = 16 * mib
	)
	// Data at [0, 4K), [1M, 1M+100K) (past a 64K record), [10M-1, 10M+1)
	// (straddling a block edge), size 16M.
	f := tm.path("sparse")
	fd, err := os.Create(f)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	put := func(off int, data []byte) {
		if _, err := fd.WriteAt(data, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], data)
	}
	put(0, bytes.Repeat([]byte{1}, 4096))
	put(mib, bytes.Repeat([]byte{2}, 100<<10))
	put(10*mib-1, []byte{3, 3})
	if err := fd.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	const b = 4096
	checks := []seekCheck{
		{unix.SEEK_DATA, 0, 0},
		{unix.SEEK_HOLE, 0, b},
		{unix.SEEK_HOLE, 100, b},
		{unix.SEEK_DATA, b, mib},
		{unix.SEEK_DATA, b + 1, mib},
		{unix.SEEK_DATA, mib + 5, mib + 5},
		{unix.SEEK_HOLE, mib, mib + 100<<10},
		{unix.SEEK_DATA, mib + 100<<10, 10*mib - b},
		{unix.SEEK_HOLE, 10*mib - b, 10*mib + b},
		{unix.SEEK_DATA, 10*mib + b, -int64(syscall.ENXIO)},
		{unix.SEEK_HOLE, 10*mib + b, 10*mib + b},
		{unix.SEEK_HOLE, size - 1, size - 1},
		{unix.SEEK_DATA, size, -int64(syscall.ENXIO)},
		{unix.SEEK_HOLE, size, -int64(syscall.ENXIO)},
	}
	verify := func(when string) {
		t.Helper()
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s: content differs from byte %d (len %d, want %d)", when, i, len(got), len(want))
		}
		checkSeeks(t, f, when, checks)
	}
	verify("in the cache")
	if err := tm.eng.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	verify("destaged")
	tm.remount()
	verify("after remount")

	// A hole punched into destaged data, and new data in a hole, with the
	// rest in the backend.
	fd, err = os.OpenFile(f, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(fd.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, mib+8*b, 4*b); err != nil {
		t.Fatal(err)
	}
	clear(want[mib+8*b : mib+12*b])
	put(4*mib, []byte("new"))
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	checks = []seekCheck{
		{unix.SEEK_HOLE, mib, mib + 8*b},
		{unix.SEEK_DATA, mib + 8*b, mib + 12*b},
		{unix.SEEK_HOLE, mib + 12*b, mib + 100<<10},
		{unix.SEEK_DATA, mib + 100<<10, 4 * mib},
		{unix.SEEK_HOLE, 4 * mib, 4*mib + b},
		{unix.SEEK_DATA, 4*mib + b, 10*mib - b},
	}
	verify("after punch and write")
	tm.remount()
	verify("after punch, write and remount")

	// Holes punched into dirty data still in the cache, one of them
	// unaligned (its partial blocks are zeroed, not dropped).
	f2 := tm.path("punched")
	data := bytes.Repeat([]byte{9}, 64<<10)
	if err := os.WriteFile(f2, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err = os.OpenFile(f2, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range [][2]int64{{2 * b, 2 * b}, {6*b + 100, 3 * b}} {
		if err := unix.Fallocate(int(fd.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, h[0], h[1]); err != nil {
			t.Fatal(err)
		}
		clear(data[h[0] : h[0]+h[1]])
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	punched := []seekCheck{
		{unix.SEEK_HOLE, 0, 2 * b},
		{unix.SEEK_DATA, 2 * b, 4 * b},
		{unix.SEEK_HOLE, 4 * b, 7 * b},
		{unix.SEEK_DATA, 7 * b, 9 * b},
		{unix.SEEK_DATA, 8 * b, 9 * b},
		{unix.SEEK_HOLE, 9 * b, 64 << 10},
	}
	for _, when := range []string{"punched in the cache", "punched, destaged", "punched, remounted"} {
		switch when {
		case "punched, destaged":
			if err := tm.eng.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
		case "punched, remounted":
			tm.remount()
		}
		got, err := os.ReadFile(f2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: content differs", when)
		}
		checkSeeks(t, f2, when, punched)
	}
}

// TestXattrs checks extended attributes: set, get, list, remove, the
// create/replace flags, size queries, 64 KiB values, and a remount.
func TestXattrs(t *testing.T) {
	tm := newTestMount(t, testConfig())
	f, d, l := tm.path("f"), tm.path("d"), tm.path("l")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", l); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, cachelayer.MaxXattrValue)
	for i := range big {
		big[i] = byte(i * 7)
	}
	values := map[string][]byte{
		"user.empty":  {},
		"user.small":  []byte("value"),
		"user.binary": {0, 1, 2, 0, 255},
		"user.big":    big,
		"trusted.t":   []byte("root only"),
	}
	for _, p := range []string{f, d} {
		for n, v := range values {
			if err := unix.Lsetxattr(p, n, v, 0); err != nil {
				t.Fatalf("setxattr %s %s: %v", p, n, err)
			}
		}
	}
	// user.* is refused on symlinks by the kernel; trusted.* is root's.
	if err := unix.Lsetxattr(l, "trusted.link", []byte("on the link"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(l, "user.x", []byte("v"), 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("user xattr on a symlink: %v, want EPERM", err)
	}

	if err := unix.Setxattr(f, "user.small", []byte("x"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("XATTR_CREATE of an existing name: %v, want EEXIST", err)
	}
	if err := unix.Setxattr(f, "user.missing", []byte("x"), unix.XATTR_REPLACE); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("XATTR_REPLACE of a missing name: %v, want ENODATA", err)
	}
	if err := unix.Setxattr(f, "user.small", []byte("replaced"), unix.XATTR_REPLACE); err != nil {
		t.Error(err)
	}
	if err := unix.Setxattr(f, "user.created", []byte("new"), unix.XATTR_CREATE); err != nil {
		t.Error(err)
	}
	if err := unix.Setxattr(f, "user.toobig", make([]byte, cachelayer.MaxXattrValue+1), 0); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("setxattr of %d bytes: %v, want E2BIG", cachelayer.MaxXattrValue+1, err)
	}
	if _, err := unix.Getxattr(f, "user.missing", make([]byte, 10)); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr of a missing name: %v, want ENODATA", err)
	}
	if err := unix.Removexattr(f, "user.missing"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("removexattr of a missing name: %v, want ENODATA", err)
	}
	if n, err := unix.Getxattr(f, "user.big", nil); err != nil || n != len(big) {
		t.Errorf("size query: %d, %v, want %d", n, err, len(big))
	}
	if _, err := unix.Getxattr(f, "user.big", make([]byte, 100)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("getxattr into a short buffer: %v, want ERANGE", err)
	}
	if _, err := unix.Listxattr(f, make([]byte, 3)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("listxattr into a short buffer: %v, want ERANGE", err)
	}
	if err := unix.Removexattr(f, "user.binary"); err != nil {
		t.Error(err)
	}
	values["user.created"] = []byte("new")
	wantF := map[string][]byte{}
	for n, v := range values {
		wantF[n] = v
	}
	wantF["user.small"] = []byte("replaced")
	delete(wantF, "user.binary")
	delete(values, "user.created")

	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			path string
			want map[string][]byte
		}{{f, wantF}, {d, values}, {l, map[string][]byte{"trusted.link": []byte("on the link")}}} {
			got := xattrs(t, c.path)
			if len(got) != len(c.want) {
				t.Errorf("%s: %s has %d xattrs %v, want %d", when, c.path, len(got), slices.Sorted(mapKeys(got)), len(c.want))
			}
			for n, v := range c.want {
				if g, ok := got[n]; !ok || !bytes.Equal(g, v) {
					t.Errorf("%s: %s %s = %d bytes (present %v), want %d bytes", when, c.path, n, len(g), ok, len(v))
				}
			}
		}
	}
	check("before remount")
	tm.remount()
	check("after remount")

	// Many attributes on one object.
	for i := range 200 {
		if err := unix.Setxattr(f, "user.many."+strconv.Itoa(i), []byte(strconv.Itoa(i)), 0); err != nil {
			t.Fatal(err)
		}
		wantF["user.many."+strconv.Itoa(i)] = []byte(strconv.Itoa(i))
	}
	tm.remount()
	check("with many, after remount")
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// xattrs returns all extended attributes of path (not following symlinks).
func xattrs(t testing.TB, path string) map[string][]byte {
	t.Helper()
	m, err := readXattrs(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// readXattrs returns all extended attributes of path (not following
// symlinks).
func readXattrs(path string) (map[string][]byte, error) {
	n, err := unix.Llistxattr(path, nil)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", path, err)
	}
	buf := make([]byte, n)
	if n, err = unix.Llistxattr(path, buf); err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", path, err)
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		sz, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", path, name, err)
		}
		v := make([]byte, sz)
		if sz, err = unix.Lgetxattr(path, name, v); err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", path, name, err)
		}
		out[name] = v[:sz]
	}
	return out, nil
}

// TestLocksBetweenProcesses checks that a lock held by this process keeps
// another process out: fcntl record locks and flock(2).
func TestLocksBetweenProcesses(t *testing.T) {
	tm := newTestMount(t, testConfig())
	h := newHelper(t, tm)
	f := tm.path("locked")
	if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("fcntl", func(t *testing.T) {
		fd, err := os.OpenFile(f, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		if err := unix.FcntlFlock(fd.Fd(), unix.F_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
		errno, holder := h.run(nil, "setlk", f)
		if errno != syscall.EAGAIN {
			t.Errorf("F_SETLK from another process: %s, want EAGAIN", errnoName(errno))
		}
		if holder != strconv.Itoa(os.Getpid()) {
			t.Errorf("F_GETLK from another process names holder %q, want %d", holder, os.Getpid())
		}
		lk.Type = unix.F_UNLCK
		if err := unix.FcntlFlock(fd.Fd(), unix.F_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if errno, holder := h.run(nil, "setlk", f); errno != 0 || holder != "none" {
			t.Errorf("F_SETLK after unlock: %s, holder %q", errnoName(errno), holder)
		}
	})

	t.Run("flock", func(t *testing.T) {
		fd, err := os.OpenFile(f, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		if err := unix.Flock(int(fd.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		h.expect(nil, syscall.EWOULDBLOCK, "flock", f)
		if err := unix.Flock(int(fd.Fd()), unix.LOCK_UN); err != nil {
			t.Fatal(err)
		}
		h.expect(nil, 0, "flock", f)
	})
}
