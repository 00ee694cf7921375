package cachelayer

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

const (
	modeDir  = syscall.S_IFDIR | 0o755
	modeFile = syscall.S_IFREG | 0o644
)

// quotaOf returns the usage of the quota on path.
func quotaOf(t *testing.T, e *Engine, path string) QuotaInfo {
	t.Helper()
	for _, q := range e.Quotas() {
		if q.Path == path {
			return q
		}
	}
	t.Fatalf("no quota on %s", path)
	return QuotaInfo{}
}

func wantUsage(t *testing.T, e *Engine, path string, bytes, inodes uint64, when string) {
	t.Helper()
	q := quotaOf(t, e, path)
	if q.Root == 0 {
		t.Fatalf("%s: quota %s inactive", when, path)
	}
	if q.UsedBytes != bytes || q.UsedInodes != inodes {
		t.Fatalf("%s: quota %s uses %d bytes %d inodes, want %d and %d", when, path, q.UsedBytes, q.UsedInodes, bytes, inodes)
	}
}

func TestQuotaBytes(t *testing.T) {
	const limit = 64 << 10
	r := newRig(t, Config{CacheSize: 8 << 20, Quotas: []DirQuota{{Path: "/p", Bytes: limit}}})
	e := r.e
	p := mustCreate(t, e, RootIno, "p", modeDir) // the quota starts here
	f := mustCreate(t, e, p.Ino, "f", modeFile)
	data := bytes.Repeat([]byte{7}, 62<<10)
	mustWrite(t, e, f.Ino, 0, data)
	wantUsage(t, e, "/p", 62<<10, 2, "after 62KiB")

	// Every way to grow past the limit fails and changes nothing.
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"write", func() error { _, err := e.Write(bg, f.Ino, 62<<10, make([]byte, 8<<10), WriteOpts{}); return err }},
		{"overwrite and extend", func() error { _, err := e.Write(bg, f.Ino, 0, make([]byte, limit+1), WriteOpts{}); return err }},
		{"write far", func() error { _, err := e.Write(bg, f.Ino, 1<<20, []byte{1}, WriteOpts{}); return err }},
		{"truncate", func() error { _, err := e.SetAttr(bg, f.Ino, SetAttr{Size: ptr(uint64(limit + 1))}); return err }},
		{"fallocate", func() error { return e.Fallocate(bg, f.Ino, 0, 0, limit+4096) }},
		{"symlink", func() error {
			_, err := e.Create(bg, p.Ino, "l", NewObject{Mode: syscall.S_IFLNK, Target: string(make([]byte, 4095))}, root())
			return err
		}},
	} {
		if err := tc.op(); !errors.Is(err, ErrQuota) {
			t.Errorf("%s past the quota: %v, want ErrQuota", tc.name, err)
		}
		got := readAll(t, e, f.Ino)
		if !bytes.Equal(got, data) {
			t.Fatalf("%s past the quota changed the file: %d bytes", tc.name, len(got))
		}
		wantUsage(t, e, "/p", 62<<10, 2, tc.name)
	}
	// Up to the limit is fine; outside the tree nothing is limited.
	mustWrite(t, e, f.Ino, 62<<10, make([]byte, 2<<10))
	wantUsage(t, e, "/p", limit, 2, "at the limit")
	g := mustCreate(t, e, RootIno, "g", modeFile)
	mustWrite(t, e, g.Ino, 0, make([]byte, 2*limit))
	// Shrinking gives bytes back.
	if _, err := e.SetAttr(bg, f.Ino, SetAttr{Size: ptr(uint64(16 << 10))}); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, e, "/p", 16<<10, 2, "after truncate")

	info, err := e.StatFSAt(f.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if info.Total != limit || info.Free != limit-16<<10 || info.Avail != limit-16<<10 || info.Files != 0 {
		t.Errorf("statfs in the quota: %+v", info)
	}
	if info, _ := e.StatFSAt(g.Ino); info.Total == limit {
		t.Errorf("statfs outside the quota shows it: %+v", info)
	}
	// Create's reference (the kernel's lookup) keeps the unlinked file, and
	// its charge, until it goes.
	if err := e.Unlink(bg, p.Ino, "f"); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, e, "/p", 16<<10, 2, "after unlink, still referenced")
	e.Unref(f.Ino, 1)
	wantUsage(t, e, "/p", 0, 1, "after the last reference")
}

func TestQuotaInodes(t *testing.T) {
	r := newRig(t, Config{CacheSize: 8 << 20, Quotas: []DirQuota{{Path: "p", Inodes: 3}}})
	e := r.e
	p := mustCreate(t, e, RootIno, "p", modeDir)
	mustCreate(t, e, p.Ino, "a", modeFile)
	d := mustCreate(t, e, p.Ino, "d", modeDir)
	for _, tc := range []struct {
		name string
		obj  NewObject
	}{
		{"file", NewObject{Mode: modeFile}},
		{"dir", NewObject{Mode: modeDir}},
		{"symlink", NewObject{Mode: syscall.S_IFLNK, Target: "x"}},
		{"fifo", NewObject{Mode: syscall.S_IFIFO | 0o644}},
	} {
		if _, err := e.Create(bg, d.Ino, tc.name, tc.obj, root()); !errors.Is(err, ErrQuota) {
			t.Errorf("create %s past the inode quota: %v", tc.name, err)
		}
		if _, err := e.Lookup(d.Ino, tc.name); !errors.Is(err, ErrNotExist) {
			t.Errorf("%s exists after EDQUOT: %v", tc.name, err)
		}
	}
	wantUsage(t, e, "p", 0, 3, "full")
	info, _ := e.StatFSAt(d.Ino)
	if info.Files != 3 || info.FreeFiles != 0 {
		t.Errorf("statfs files %d free %d, want 3 and 0", info.Files, info.FreeFiles)
	}
	// An object held open after unlink is charged until its last reference.
	e.Ref(d.Ino, 1)
	if err := e.Rmdir(bg, p.Ino, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Create(bg, p.Ino, "b", NewObject{Mode: modeFile}, root()); !errors.Is(err, ErrQuota) {
		t.Errorf("create while the removed dir is held: %v", err)
	}
	e.Unref(d.Ino, 2) // Create's and ours
	mustCreate(t, e, p.Ino, "b", modeFile)
	wantUsage(t, e, "p", 0, 3, "after replacing")
}

func TestQuotaRenameAndLink(t *testing.T) {
	r := newRig(t, Config{CacheSize: 8 << 20, Quotas: []DirQuota{{Path: "top/p", Bytes: 1 << 20}, {Path: "q"}, {Path: "later"}, {Path: "top/r"}}})
	e := r.e
	top := mustCreate(t, e, RootIno, "top", modeDir)
	p := mustCreate(t, e, top.Ino, "p", modeDir)
	q := mustCreate(t, e, RootIno, "q", modeDir)
	in := mustCreate(t, e, p.Ino, "in", modeFile)
	sub := mustCreate(t, e, p.Ino, "sub", modeDir)
	mustCreate(t, e, RootIno, "out", modeFile)
	mustCreate(t, e, top.Ino, "empty", modeDir)
	mustCreate(t, e, top.Ino, "r", modeDir) // an empty quota root
	mustCreate(t, e, q.Ino, "inq", modeFile)
	mustWrite(t, e, in.Ino, 0, make([]byte, 10000))

	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"into a quota", func() error { return e.Rename(bg, RootIno, "out", p.Ino, "x", 0) }, ErrCrossQuota},
		{"out of a quota", func() error { return e.Rename(bg, p.Ino, "in", RootIno, "x", 0) }, ErrCrossQuota},
		{"between quotas", func() error { return e.Rename(bg, p.Ino, "in", q.Ino, "x", 0) }, ErrCrossQuota},
		{"exchange across", func() error { return e.Rename(bg, p.Ino, "in", RootIno, "out", RenameExchange) }, ErrCrossQuota},
		{"quota root", func() error { return e.Rename(bg, top.Ino, "p", top.Ino, "p2", 0) }, ErrCrossQuota},
		{"dir holding a quota root", func() error { return e.Rename(bg, RootIno, "top", RootIno, "top2", 0) }, ErrCrossQuota},
		{"link into a quota", func() error { _, err := e.Link(bg, in.Ino, RootIno, "l"); return err }, ErrCrossQuota},
		{"over a quota root", func() error { return e.Rename(bg, top.Ino, "empty", top.Ino, "r", 0) }, ErrCrossQuota},
		{"to a quota path not started", func() error { return e.Rename(bg, top.Ino, "empty", RootIno, "later", 0) }, ErrCrossQuota},
		{"link within", func() error { _, err := e.Link(bg, in.Ino, sub.Ino, "l"); return err }, nil},
		{"rename within", func() error { return e.Rename(bg, p.Ino, "in", sub.Ino, "moved", 0) }, nil},
		{"rename outside", func() error { return e.Rename(bg, RootIno, "out", RootIno, "out2", 0) }, nil},
	} {
		if err := tc.op(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Two names of one file count once; the usage survives the moves.
	wantUsage(t, e, "top/p", 10000, 3, "after renames")
	wantUsage(t, e, "q", 0, 2, "after renames")
	if err := e.Unlink(bg, sub.Ino, "l"); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, e, "top/p", 10000, 3, "after unlinking one name")
}

func TestQuotaNested(t *testing.T) {
	r := newRig(t, Config{CacheSize: 8 << 20, Quotas: []DirQuota{{Path: "a/b", Bytes: 1 << 20}, {Path: "a", Bytes: 100 << 10}}})
	e := r.e
	a := mustCreate(t, e, RootIno, "a", modeDir)
	b := mustCreate(t, e, a.Ino, "b", modeDir)
	f := mustCreate(t, e, b.Ino, "f", modeFile)
	mustWrite(t, e, f.Ino, 0, make([]byte, 80<<10))
	if _, err := e.Write(bg, f.Ino, 80<<10, make([]byte, 40<<10), WriteOpts{}); !errors.Is(err, ErrQuota) {
		t.Errorf("write past the outer quota: %v", err)
	}
	wantUsage(t, e, "a", 80<<10, 3, "outer")
	wantUsage(t, e, "a/b", 80<<10, 2, "inner")
	r.restart()
	wantUsage(t, r.e, "a", 80<<10, 3, "outer after remount")
	wantUsage(t, r.e, "a/b", 80<<10, 2, "inner after remount")
	if info, _ := r.e.StatFSAt(f.Ino); info.Total != 1<<20 {
		t.Errorf("statfs shows %d bytes, want the innermost quota's", info.Total)
	}
}

// TestQuotaSurvivesRestart checks usage after a clean remount and after a
// crash that replays the log, and that a removed quota root stops its
// quota until a directory is made at its path again.
func TestQuotaSurvivesRestart(t *testing.T) {
	r := newRig(t, Config{CacheSize: 8 << 20, Quotas: []DirQuota{{Path: "p", Bytes: 1 << 20, Inodes: 10}}})
	e := r.e
	p := mustCreate(t, e, RootIno, "p", modeDir)
	f := mustCreate(t, e, p.Ino, "f", modeFile)
	mustWrite(t, e, f.Ino, 0, make([]byte, 300<<10))
	s, err := e.Create(bg, p.Ino, "s", NewObject{Mode: syscall.S_IFLNK, Target: "target"}, root())
	if err != nil {
		t.Fatal(err)
	}
	e.Unref(s.Ino, 1)
	r.restart()
	wantUsage(t, r.e, "p", 300<<10+6, 3, "after remount")

	// Ops that only the log holds: a crash replays them.
	e = r.e
	g := mustCreate(t, e, p.Ino, "g", modeFile)
	mustWrite(t, e, g.Ino, 0, make([]byte, 500<<10))
	if err := e.Unlink(bg, p.Ino, "s"); err != nil {
		t.Fatal(err)
	}
	e.Ref(f.Ino, 1) // open, then unlinked
	if err := e.Unlink(bg, p.Ino, "f"); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, e, "p", 800<<10, 3, "before the crash")
	if err := e.Sync(bg); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, e, p.Ino, "lost", modeFile) // not synced: lost
	r.crash()
	r.start()
	// The open file's reference died with the process.
	wantUsage(t, r.e, "p", 500<<10, 2, "after crash replay")
	if _, err := r.e.Write(bg, g.Ino, 500<<10, make([]byte, 600<<10), WriteOpts{}); !errors.Is(err, ErrQuota) {
		t.Errorf("write past the quota after replay: %v", err)
	}

	// Removing the root stops the quota; a new directory there restarts it.
	e = r.e
	if err := e.Unlink(bg, p.Ino, "g"); err != nil {
		t.Fatal(err)
	}
	if err := e.Rmdir(bg, RootIno, "p"); err != nil {
		t.Fatal(err)
	}
	if q := quotaOf(t, e, "p"); q.Root != 0 {
		t.Fatalf("quota still on removed dir: %+v", q)
	}
	p2 := mustCreate(t, e, RootIno, "p", modeDir)
	wantUsage(t, e, "p", 0, 1, "new root")
	h := mustCreate(t, e, p2.Ino, "h", modeFile)
	if _, err := e.Write(bg, h.Ino, 0, make([]byte, 2<<20), WriteOpts{}); !errors.Is(err, ErrQuota) {
		t.Errorf("write past the restarted quota: %v", err)
	}
}

func TestQuotaConfigErrors(t *testing.T) {
	for _, qs := range [][]DirQuota{
		{{Path: "a/../b"}},
		{{Path: "a"}, {Path: "/a/"}},
	} {
		cfg := Config{Quotas: qs}
		cfg.setDefaults()
		if err := cfg.validate(); err == nil {
			t.Errorf("%+v: accepted", qs)
		}
	}
}
