package fs

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dcache/dcache/cachelayer"
)

// TestQuota checks a directory quota through the mount: write(2) past it
// fails with EDQUOT and changes nothing, so do extending truncates and
// creates past the inode limit, renames across its boundary fail with
// EXDEV, and df inside the tree shows the quota.
func TestQuota(t *testing.T) {
	const limit = 1 << 20
	cfg := testConfig()
	cfg.Quotas = []cachelayer.DirQuota{{Path: "/projects/a", Bytes: limit, Inodes: 4}}
	tm := newTestMount(t, cfg)
	// Without the kernel's write-back cache, so that write(2) itself
	// reaches the engine and gets its answer.
	tm.mo.WritebackCache = false
	tm.remount()

	for _, d := range []string{"projects", "projects/a", "projects/a/d"} {
		if err := os.Mkdir(tm.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(tm.path("projects/a/f"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, limit-4096)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 8192)); !errors.Is(err, syscall.EDQUOT) {
		t.Errorf("write past the quota: %v, want EDQUOT", err)
	}
	if err := f.Truncate(limit + 1); !errors.Is(err, syscall.EDQUOT) {
		t.Errorf("truncate past the quota: %v, want EDQUOT", err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != limit-4096 {
		t.Errorf("size after EDQUOT: %v %v, want %d", st.Size(), err, limit-4096)
	}
	// Inodes: projects/a, d, f, and one more.
	if err := os.WriteFile(tm.path("projects/a/d/g"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tm.path("projects/a/d/h"), 0o755); !errors.Is(err, syscall.EDQUOT) {
		t.Errorf("mkdir past the inode quota: %v, want EDQUOT", err)
	}
	if err := os.WriteFile(tm.path("projects/out"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tm.path("projects/out"), tm.path("projects/a/out")); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("rename into the quota: %v, want EXDEV", err)
	}

	var in, out unix.Statfs_t
	if err := unix.Statfs(tm.path("projects/a/d"), &in); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(tm.path("projects"), &out); err != nil {
		t.Fatal(err)
	}
	if got := in.Blocks * uint64(in.Frsize); got != limit {
		t.Errorf("df in the quota: %d bytes total, want %d", got, limit)
	}
	if got := in.Bavail * uint64(in.Frsize); got != 4096 {
		t.Errorf("df in the quota: %d bytes available, want 4096", got)
	}
	if in.Files != 4 || in.Ffree != 0 {
		t.Errorf("df -i in the quota: %d files %d free, want 4 and 0", in.Files, in.Ffree)
	}
	if out.Blocks*uint64(out.Frsize) == limit || out.Files == 4 {
		t.Errorf("df outside the quota shows it: %+v", out)
	}

	// The usage is the same after a remount.
	f.Close()
	tm.remount()
	if err := os.WriteFile(tm.path("projects/a/d/big"), make([]byte, 8192), 0o644); !errors.Is(err, syscall.EDQUOT) {
		t.Errorf("create after remount: %v, want EDQUOT (inodes)", err)
	}
	f, err = os.OpenFile(tm.path("projects/a/f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		t.Errorf("write up to the quota after remount: %v", err)
	}
	if _, err := f.Write([]byte{1}); !errors.Is(err, syscall.EDQUOT) {
		t.Errorf("write after remount: %v, want EDQUOT (bytes)", err)
	}
}

// TestQuotaWriteback checks that with the kernel's write-back cache on, a
// write past a quota still fails in write(2) (files in quota trees bypass
// the page cache), the file keeps what fit, and mmap of such a file works.
func TestQuotaWriteback(t *testing.T) {
	cfg := testConfig()
	cfg.Quotas = []cachelayer.DirQuota{{Path: "q", Bytes: 1 << 20}}
	tm := newTestMount(t, cfg) // write-back cache on
	if err := os.Mkdir(tm.path("q"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(tm.path("q/f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Write(make([]byte, 2<<20))
	if !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("write of 2 MiB into a 1 MiB quota: %d bytes, %v; want EDQUOT", n, err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync after the refused write: %v", err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(n) || n > 1<<20 {
		t.Errorf("after writing %d bytes and EDQUOT, the file is %d bytes", n, st.Size())
	}

	// Shared mmap of a file in the quota tree reads and writes its bytes.
	if err := f.Truncate(8192); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, 8192, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap of a file in a quota tree: %v", err)
	}
	copy(m[4096:], "mapped")
	if err := syscall.Munmap(m); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := f.ReadAt(got, 4096); err != nil || string(got) != "mapped" {
		t.Errorf("read back what mmap wrote: %q, %v", got, err)
	}
}
