package cachelayer

import (
	"bytes"
	"syscall"
	"testing"
)

// ObjectInfo of a file written but not destaged shows its dirty bytes in
// the cache and the LSNs of its records; after FlushTree of its directory
// the data is in a segment, the log range is gone, and a file outside the
// tree is still dirty.
func TestObjectInfoAndFlushTree(t *testing.T) {
	r := newRig(t, Config{CacheSize: 4 << 20, MaxDirtyAge: 1 << 40, HighWatermark: 0.99, LowWatermark: 0.5})
	e := r.e
	d := mustCreate(t, e, RootIno, "d", syscall.S_IFDIR|0o755)
	sub := mustCreate(t, e, d.Ino, "sub", syscall.S_IFDIR|0o755)
	f := mustCreate(t, e, sub.Ino, "f", syscall.S_IFREG|0o644)
	other := mustCreate(t, e, RootIno, "other", syscall.S_IFREG|0o644)
	mustWrite(t, e, f.Ino, 0, bytes.Repeat([]byte{'x'}, 3*BlockSize))
	mustWrite(t, e, f.Ino, 5*BlockSize, bytes.Repeat([]byte{'y'}, BlockSize))
	mustWrite(t, e, other.Ino, 0, []byte("other"))

	oi, err := e.ObjectInfo(f.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if oi.DirtyBytes != 4*BlockSize || oi.CleanBytes != 0 {
		t.Errorf("dirty %d clean %d, want %d and 0", oi.DirtyBytes, oi.CleanBytes, 4*BlockSize)
	}
	if len(oi.Cached) != 2 || oi.Cached[0] != (CachedRun{Off: 0, Len: 3 * BlockSize, Dirty: true, MinLSN: oi.Cached[0].MinLSN}) || oi.Cached[1].Off != 5*BlockSize {
		t.Errorf("cached runs %+v, want [0,12288) and [20480,24576) dirty", oi.Cached)
	}
	if oi.LogFirst == 0 || oi.LogLast <= oi.LogFirst || oi.Cached[0].MinLSN < oi.LogFirst {
		t.Errorf("log range %d..%d (run min lsn %d): want the create and the writes", oi.LogFirst, oi.LogLast, oi.Cached[0].MinLSN)
	}
	if len(oi.Extents) != 0 {
		t.Errorf("extents before destage: %+v", oi.Extents)
	}
	if len(oi.Paths) != 1 || oi.Paths[0] != "/d/sub/f" {
		t.Errorf("paths %q, want /d/sub/f", oi.Paths)
	}

	if err := e.FlushTree(bg, d.Ino); err != nil {
		t.Fatal(err)
	}
	oi, err = e.ObjectInfo(f.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if oi.DirtyBytes != 0 || oi.CleanBytes != 4*BlockSize {
		t.Errorf("after flush: dirty %d clean %d, want 0 and %d", oi.DirtyBytes, oi.CleanBytes, 4*BlockSize)
	}
	var inSeg uint64
	for _, x := range oi.Extents {
		inSeg += uint64(x.Len)
		if x.Addr.Segment == 0 {
			t.Errorf("extent %+v has no segment", x)
		}
	}
	if inSeg != 4*BlockSize {
		t.Errorf("after flush %d bytes in segments, want %d: %+v", inSeg, 4*BlockSize, oi.Extents)
	}
	oo, err := e.ObjectInfo(other.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if oo.DirtyBytes != BlockSize || oo.LogLast == 0 {
		t.Errorf("the file outside the flushed tree: dirty %d, log %d..%d; want one dirty page still logged", oo.DirtyBytes, oo.LogFirst, oo.LogLast)
	}
	if _, err := e.ObjectInfo(999999); err != ErrNotExist {
		t.Errorf("ObjectInfo of a missing object: %v, want ErrNotExist", err)
	}

	// The partial round kept what the other file needs: after a crash it
	// comes back from the log.
	r.crash()
	r.start()
	g, err := r.e.Lookup(RootIno, "other")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r.e, g.Ino); string(got) != "other" {
		t.Errorf("after a crash the unflushed file reads %q", got)
	}
}
