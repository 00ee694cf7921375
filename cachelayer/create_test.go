package cachelayer

import (
	"fmt"
	"syscall"
	"testing"
)

// TestCreateInSetgidDir checks the group and the setgid bit of objects
// created in a setgid directory.
func TestCreateInSetgidDir(t *testing.T) {
	r := newRig(t, Config{CacheSize: 4 << 20})
	e := r.e
	const dirGid = 1001
	d := mustCreate(t, e, RootIno, "d", syscall.S_IFDIR|syscall.S_ISGID|0o777)
	if _, err := e.SetAttr(bg, d.Ino, SetAttr{Gid: ptr(uint32(dirGid))}); err != nil {
		t.Fatal(err)
	}
	nonmember := Caller{Uid: 1000, Gid: 1000}
	for i, tc := range []struct {
		c    Caller
		mode uint32
		want uint32
	}{
		{nonmember, syscall.S_IFREG | 0o2755, syscall.S_IFREG | 0o755},
		{nonmember, syscall.S_IFREG | 0o2745, syscall.S_IFREG | 0o2745}, // mandatory locking
		{nonmember, syscall.S_IFREG | 0o644, syscall.S_IFREG | 0o644},
		{nonmember, syscall.S_IFDIR | 0o755, syscall.S_IFDIR | 0o2755},
		{Caller{Uid: 1000, Gid: dirGid}, syscall.S_IFREG | 0o2755, syscall.S_IFREG | 0o2755},
		{Caller{Uid: 1000, Gid: 1000, Groups: []uint32{5, dirGid}}, syscall.S_IFREG | 0o2755, syscall.S_IFREG | 0o2755},
		{Caller{Uid: 1000, Gid: 1000, Groups: []uint32{5}}, syscall.S_IFREG | 0o2755, syscall.S_IFREG | 0o755},
		{Caller{}, syscall.S_IFREG | 0o2755, syscall.S_IFREG | 0o2755}, // root
	} {
		in, err := e.Create(bg, d.Ino, fmt.Sprint(i), NewObject{Mode: tc.mode}, tc.c)
		if err != nil {
			t.Fatal(err)
		}
		if in.Mode != tc.want || in.Gid != dirGid || in.Uid != tc.c.Uid {
			t.Errorf("%d: %+v creates mode %#o: mode %#o owner %d:%d, want %#o %d:%d", i, tc.c, tc.mode, in.Mode, in.Uid, in.Gid, tc.want, tc.c.Uid, dirGid)
		}
	}
}

func ptr[T any](v T) *T { return &v }
