package cachelayer

import (
	"bytes"
	"strings"
	"testing"
)

// TestXattrRecordRoom checks that xattr ops reserve room in the log for
// everything their record holds: the largest value and name, and the
// object's inode, which carries a symlink's target.
func TestXattrRecordRoom(t *testing.T) {
	r := newRig(t, Config{CacheSize: 4 << 20})
	e := r.e
	target := strings.Repeat("t", MaxSymlinkLen)
	l, err := e.Create(bg, RootIno, "l", NewObject{Mode: 0o120777, Target: target}, root())
	if err != nil {
		t.Fatal(err)
	}
	name := "trusted." + strings.Repeat("n", MaxXattrName-len("trusted."))
	for _, size := range []int{0, 1, 2000, MaxXattrValue} {
		v := bytes.Repeat([]byte{byte(size)}, size)
		if err := e.SetXattr(bg, l.Ino, name, v, 0); err != nil {
			t.Fatalf("setxattr of %d bytes on a symlink with a %d-byte target: %v", size, len(target), err)
		}
		got, err := e.GetXattr(l.Ino, name)
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("getxattr: %d bytes, %v; want %d", len(got), err, size)
		}
	}
	if err := e.RemoveXattr(bg, l.Ino, name); err != nil {
		t.Fatalf("removexattr on a symlink with a %d-byte target: %v", len(target), err)
	}
	if err := e.SetXattr(bg, l.Ino, "trusted.a", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	r.restart()
	if got, err := r.e.GetXattr(l.Ino, "trusted.a"); err != nil || string(got) != "v" {
		t.Errorf("after restart: %q, %v", got, err)
	}
	if _, err := r.e.GetXattr(l.Ino, name); err != ErrNoAttr {
		t.Errorf("removed attribute after restart: %v, want ErrNoAttr", err)
	}
}
