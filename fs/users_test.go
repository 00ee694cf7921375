package fs

import (
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/dcache/dcache/cachelayer"
)

// mkfile creates path as root with the given content, then sets its
// permission bits (after creation, so the umask does not interfere) and
// owner.
func mkfile(t *testing.T, path, content string, perm uint32, uid, gid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(path, perm); err != nil { // after chown, which clears setuid
		t.Fatal(err)
	}
}

// mkdirMode creates a directory as root with exactly perm.
func mkdirMode(t *testing.T, path string, perm uint32) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func lstat(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkMode fails unless path's permission bits (with setuid, setgid and
// sticky) are want.
func checkMode(t *testing.T, path string, want uint32) {
	t.Helper()
	if got := lstat(t, path).Mode & 0o7777; got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}

func checkOwner(t *testing.T, path string, uid, gid uint32) {
	t.Helper()
	st := lstat(t, path)
	if st.Uid != uid || st.Gid != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
	}
}

func checkContent(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s: content %q, want %q", path, got, want)
	}
}

const (
	oRead   = syscall.O_RDONLY
	oWrite  = syscall.O_WRONLY
	oCreate = syscall.O_WRONLY | syscall.O_CREAT | syscall.O_EXCL
)

func flags(f int) string { return strconv.Itoa(f) }

// TestUsers checks that the mount behaves like a local filesystem for users
// other than the one running it: permission checks are the caller's, and
// setuid/setgid bits are cleared as the kernel clears them elsewhere.
func TestUsers(t *testing.T) {
	tm := newTestMount(t, cachelayer.Config{CacheSize: 64 << 20})
	h := newHelper(t, tm)
	u := user(testUid, testGid)
	other := user(otherUid, otherGid)

	t.Run("Permissions", func(t *testing.T) {
		mkdirMode(t, tm.path("perm"), 0o755)
		f := tm.path("perm/rootfile")
		mkfile(t, f, "root's", 0o644, 0, 0)

		// The user reaches the mount and may read: the refusals below are
		// the permission checks, not an unreachable path.
		h.expect(u, 0, "open", f, flags(oRead), "0", "")
		h.expect(u, syscall.EACCES, "open", f, flags(oWrite), "0", "x")
		h.expect(u, syscall.EACCES, "truncate", f, "0")
		h.expect(u, syscall.EACCES, "open", tm.path("perm/new"), flags(oCreate), "644", "")
		h.expect(u, syscall.EACCES, "mkdir", tm.path("perm/newdir"), "755")
		h.expect(u, syscall.EACCES, "open", tm.path("new-in-root"), flags(oCreate), "644", "")
		h.expect(u, syscall.EACCES, "unlink", f)
		checkContent(t, f, "root's")
		if _, err := os.Lstat(tm.path("perm/new")); !os.IsNotExist(err) {
			t.Errorf("perm/new exists after a refused create: %v", err)
		}

		// Group permission through a supplementary group.
		g := tm.path("perm/groupfile")
		mkfile(t, g, "", 0o664, 0, otherGid)
		h.expect(u, syscall.EACCES, "open", g, flags(oWrite), "0", "x")
		h.expect(user(testUid, testGid, testGid, otherGid), 0, "open", g, flags(oWrite), "0", "g")
		checkContent(t, g, "g")

		mkdirMode(t, tm.path("open"), 0o777)
		h.expect(u, 0, "open", tm.path("open/mine"), flags(oCreate), "644", "user data")
		h.expect(u, 0, "mkdir", tm.path("open/mydir"), "755")
		checkOwner(t, tm.path("open/mine"), testUid, testGid)
		checkOwner(t, tm.path("open/mydir"), testUid, testGid)
		checkContent(t, tm.path("open/mine"), "user data")
		// Root's own file in the shared directory stays root's to write.
		mkfile(t, tm.path("open/rootfile"), "r", 0o644, 0, 0)
		h.expect(u, syscall.EACCES, "open", tm.path("open/rootfile"), flags(oWrite), "0", "x")
		// Without the sticky bit, anyone who may write the directory may
		// remove any entry of it.
		h.expect(u, 0, "unlink", tm.path("open/rootfile"))
	})

	t.Run("Sticky", func(t *testing.T) {
		d := tm.path("sticky")
		mkdirMode(t, d, 0o1777)
		theirs := d + "/theirs"
		h.expect(other, 0, "open", theirs, flags(oCreate), "666", "other's")
		checkOwner(t, theirs, otherUid, otherGid)
		if err := os.Chmod(theirs, 0o666); err != nil { // past the umask
			t.Fatal(err)
		}
		// World-writable file, but in a sticky directory only its owner
		// (or the directory's) may remove or rename it.
		h.expect(u, syscall.EPERM, "unlink", theirs)
		h.expect(u, syscall.EPERM, "rename", theirs, d+"/stolen")
		h.expect(u, 0, "open", theirs, flags(oWrite|syscall.O_APPEND), "0", "+user")
		h.expect(u, 0, "open", d+"/mine", flags(oCreate), "644", "")
		h.expect(u, syscall.EPERM, "rename", d+"/mine", theirs)
		h.expect(u, 0, "rename", d+"/mine", d+"/mine2")
		h.expect(u, 0, "unlink", d+"/mine2")
		h.expect(other, 0, "unlink", theirs)
	})

	t.Run("WriteKillsSuid", func(t *testing.T) {
		mkdirMode(t, tm.path("suid"), 0o755)
		for _, tc := range []struct {
			name      string
			perm      uint32
			c         *cred
			wantAfter uint32
		}{
			// Group-executable: setgid means "run as group" and goes too.
			{"user-6777", 0o6777, u, 0o777},
			// Not group-executable: setgid marks mandatory locking and stays.
			{"user-6767", 0o6767, u, 0o2767},
			{"user-4777", 0o4777, u, 0o777},
			{"user-2777", 0o2777, u, 0o777},
			// Root has CAP_FSETID, which keeps them.
			{"root-6777", 0o6777, nil, 0o6777},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := tm.path("suid/" + tc.name)
				mkfile(t, f, "0123456789", tc.perm, 0, 0)
				checkMode(t, f, tc.perm)
				h.expect(tc.c, 0, "open", f, flags(oWrite), "0", "abc")
				checkMode(t, f, tc.wantAfter)
				checkContent(t, f, "abc3456789")
			})
		}
		// The owner is no exception without CAP_FSETID.
		f := tm.path("suid/own")
		mkfile(t, f, "", 0o6777, testUid, testGid)
		h.expect(u, 0, "open", f, flags(oWrite), "0", "x")
		checkMode(t, f, 0o777)
	})

	t.Run("TruncateKillsSuid", func(t *testing.T) {
		mkdirMode(t, tm.path("trunc"), 0o755)
		for _, action := range []string{"truncate", "ftruncate"} {
			f := tm.path("trunc/" + action)
			mkfile(t, f, "0123456789", 0o6777, 0, 0)
			h.expect(u, 0, action, f, "4")
			checkMode(t, f, 0o777)
			checkContent(t, f, "0123")
			g := tm.path("trunc/" + action + "-nogx")
			mkfile(t, g, "0123456789", 0o6767, 0, 0)
			h.expect(u, 0, action, g, "0")
			checkMode(t, g, 0o2767)
			checkContent(t, g, "")
		}
		// open(O_TRUNC) truncates too.
		f := tm.path("trunc/o_trunc")
		mkfile(t, f, "0123456789", 0o6777, 0, 0)
		h.expect(u, 0, "open", f, flags(oWrite|syscall.O_TRUNC), "0", "")
		checkMode(t, f, 0o777)
		checkContent(t, f, "")
		// Root truncating keeps them.
		f = tm.path("trunc/root")
		mkfile(t, f, "0123456789", 0o6777, 0, 0)
		if err := os.Truncate(f, 2); err != nil {
			t.Fatal(err)
		}
		checkMode(t, f, 0o6777)
	})

	t.Run("ChownKillsSuid", func(t *testing.T) {
		mkdirMode(t, tm.path("chown"), 0o755)
		// By root.
		f := tm.path("chown/byroot")
		mkfile(t, f, "x", 0o6777, 0, 0)
		if err := os.Chown(f, testUid, testGid); err != nil {
			t.Fatal(err)
		}
		checkMode(t, f, 0o777)
		checkOwner(t, f, testUid, testGid)
		g := tm.path("chown/byroot-nogx")
		mkfile(t, g, "x", 0o6767, 0, 0)
		if err := os.Chown(g, -1, otherGid); err != nil {
			t.Fatal(err)
		}
		checkMode(t, g, 0o2767)
		// By the owner, to a group they belong to.
		f = tm.path("chown/byowner")
		mkfile(t, f, "x", 0o6777, testUid, testGid)
		member := user(testUid, testGid, testGid, otherGid)
		h.expect(member, 0, "chown", f, "-1", strconv.Itoa(otherGid))
		checkMode(t, f, 0o777)
		checkOwner(t, f, testUid, otherGid)
		// Not to a group they are not in, nor giving the file away.
		h.expect(u, syscall.EPERM, "chown", f, "-1", strconv.Itoa(testGid+7))
		h.expect(u, syscall.EPERM, "chown", f, strconv.Itoa(otherUid), "-1")
		// Directories keep their setgid bit (it is about new entries).
		d := tm.path("chown/dir")
		mkdirMode(t, d, 0o2775)
		if err := os.Chown(d, testUid, testGid); err != nil {
			t.Fatal(err)
		}
		checkMode(t, d, 0o2775)
	})

	t.Run("Chmod", func(t *testing.T) {
		mkdirMode(t, tm.path("chmod"), 0o755)
		f := tm.path("chmod/f")
		mkfile(t, f, "", 0o644, testUid, otherGid)
		h.expect(other, syscall.EPERM, "chmod", f, "777")
		h.expect(u, 0, "chmod", f, "4755")
		checkMode(t, f, 0o4755)
		// Setting setgid for a group one is not in drops it silently.
		h.expect(u, 0, "chmod", f, "2755")
		checkMode(t, f, 0o755)
		h.expect(user(testUid, testGid, testGid, otherGid), 0, "chmod", f, "2755")
		checkMode(t, f, 0o2755)
	})

	t.Run("SetgidDir", func(t *testing.T) {
		d := tm.path("sgid")
		mkdirMode(t, d, 0o2777)
		if err := os.Chown(d, 0, otherGid); err != nil {
			t.Fatal(err)
		}
		checkMode(t, d, 0o2777)
		// New entries take the directory's group; directories the bit too.
		h.expect(u, 0, "open", d+"/f", flags(oCreate), "644", "")
		checkOwner(t, d+"/f", testUid, otherGid)
		checkMode(t, d+"/f", 0o644)
		h.expect(u, 0, "mkdir", d+"/sub", "755")
		checkOwner(t, d+"/sub", testUid, otherGid)
		checkMode(t, d+"/sub", 0o2755)
		// A group-executable setgid file: kept for a member of the group,
		// whether by primary or supplementary group, dropped otherwise.
		for _, c := range []struct {
			name string
			c    *cred
			mode string
			want uint32
		}{
			{"nonmember", u, "2755", 0o755},
			{"primary", user(testUid, otherGid), "2755", 0o2755},
			{"supplementary", user(testUid, testGid, testGid, otherGid), "2755", 0o2755},
			{"root", nil, "2755", 0o2755},
			// Without group-execute setgid marks mandatory locking: kept.
			{"nonmember-noexec", u, "2745", 0o2745},
		} {
			p := d + "/sgid-" + c.name
			h.expect(c.c, 0, "open", p, flags(oCreate), c.mode, "")
			checkMode(t, p, c.want)
		}
	})

	t.Run("CreateMode0000", func(t *testing.T) {
		mkdirMode(t, tm.path("zero"), 0o777)
		f := tm.path("zero/f")
		// The creator gets a writable descriptor although the mode it
		// asked for allows nobody anything.
		h.expect(u, 0, "open", f, flags(oCreate), "0", "written through a mode-0000 create")
		checkMode(t, f, 0)
		checkOwner(t, f, testUid, testGid)
		checkContent(t, f, "written through a mode-0000 create") // root may read it
		// A second open is refused, as the mode says.
		h.expect(u, syscall.EACCES, "open", f, flags(oWrite), "0", "x")
		h.expect(u, syscall.EACCES, "open", f, flags(oRead), "0", "")
	})

	t.Run("Remount", func(t *testing.T) {
		// Owners and the bits left after the tests above are what a new
		// mount reports, and permission checks go on the same way.
		type want struct {
			path     string
			mode     uint32
			uid, gid uint32
		}
		var ws []want
		for _, p := range []string{"perm/rootfile", "open/mine", "sticky", "suid/user-6767", "chown/byowner", "zero/f"} {
			st := lstat(t, tm.path(p))
			ws = append(ws, want{p, st.Mode, st.Uid, st.Gid})
		}
		tm.remount()
		for _, w := range ws {
			st := lstat(t, tm.path(w.path))
			if st.Mode != w.mode || st.Uid != w.uid || st.Gid != w.gid {
				t.Errorf("%s after remount: mode %#o owner %d:%d, want %#o %d:%d", w.path, st.Mode, st.Uid, st.Gid, w.mode, w.uid, w.gid)
			}
		}
		h.expect(u, syscall.EACCES, "open", tm.path("perm/rootfile"), flags(oWrite), "0", "x")
		h.expect(u, 0, "open", tm.path("open/mine"), flags(oWrite|syscall.O_APPEND), "0", "!")
		checkContent(t, tm.path("open/mine"), "user data!")
	})
}
