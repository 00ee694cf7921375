package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// A backend on a device file: an all-zero file is formatted by the first
// mount, the data survives umount and mount, and a file holding other data
// is refused untouched until dcache format --yes --backend.
func TestDeviceBackendMount(t *testing.T) {
	requireFUSE(t)
	s := newSite(t)
	dev := filepath.Join(s.dir, "backend.img")
	if err := os.WriteFile(dev, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dev, 256<<20); err != nil {
		t.Fatal(err)
	}
	s.flags = append(s.flags, "--backend.type", "device", "--backend.path", dev)

	var files map[string][]byte
	for round := range 2 {
		if r := s.run("mount", "-d", s.mnt); r.code != 0 {
			t.Fatalf("round %d: mount -d: %s", round, r)
		}
		if round == 0 {
			files = writeTree(t, s.mnt, 30, 20<<20)
		}
		checkTree(t, s.mnt, files)
		if r := s.run("umount", s.mnt); r.code != 0 {
			t.Fatalf("round %d: umount: %s", round, r)
		}
	}
	if _, err := os.Stat(filepath.Join(s.data, "backend")); !os.IsNotExist(err) {
		t.Errorf("a backend directory was made next to the device: %v", err)
	}
	head := make([]byte, 8)
	if f, err := os.Open(dev); err == nil {
		f.ReadAt(head, 0)
		f.Close()
	}
	if string(head) != "DCBKDEVS" {
		t.Fatalf("device starts with %q, not a device superblock", head)
	}

	// Another filesystem's data on the device: refused, nothing written.
	other := filepath.Join(s.dir, "other.img")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(other, 64<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(other, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0x53, 0xef}, 1080) // ext4 superblock magic
	f.Close()
	s2 := newSite(t)
	s2.flags = append(s2.flags, "--backend.type", "device", "--backend.path", other)
	before := fileHash(t, other)
	r := s2.run("mount", "-d", s2.mnt)
	if r.code == 0 {
		t.Fatalf("mounted a device holding ext4:\n%s", r)
	}
	oneLine(t, r, other, "ext2/3/4", "dcache format --yes --backend")
	if fileHash(t, other) != before {
		t.Fatalf("the refused device was modified")
	}
	if r := s2.run("format", "--yes", "--backend"); r.code != 0 || !strings.Contains(r.stdout, "formatted backend device "+other) {
		t.Fatalf("format --backend: %s", r)
	}
	if r := s2.run("mount", "-d", s2.mnt); r.code != 0 {
		t.Fatalf("mount after format: %s", r)
	}
	want := []byte("on the formatted device")
	if err := os.WriteFile(filepath.Join(s2.mnt, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := s2.run("umount", s2.mnt); r.code != 0 {
		t.Fatalf("umount: %s", r)
	}
	if r := s2.run("mount", "-d", s2.mnt); r.code != 0 {
		t.Fatalf("remount: %s", r)
	}
	if got, err := os.ReadFile(filepath.Join(s2.mnt, "f")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("after remount: %q, %v", got, err)
	}
	if r := s2.run("umount", s2.mnt); r.code != 0 {
		t.Fatalf("umount: %s", r)
	}
}
