package backend

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
)

// testLog returns a logger that writes warnings and worse to the test log.
func testLog(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(tWriter{t})
	l.SetLevel(logrus.WarnLevel)
	return logrus.NewEntry(l).WithField("component", "backend")
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// mustOpen opens dir and closes the store when the test ends.
func mustOpen(t testing.TB, fsys FS, dir string, cfg Config) *Store {
	t.Helper()
	s, _, err := Open(fsys, dir, cfg, testLog(t))
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// payload returns n deterministic pseudo-random bytes for seed.
func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// mustAppend appends p and fails the test on error.
func mustAppend(t testing.TB, s *Store, p []byte) Addr {
	t.Helper()
	a, err := s.Append(p)
	if err != nil {
		t.Fatalf("Append(%d bytes): %v", len(p), err)
	}
	return a
}

// checkRead reads a and compares with want.
func checkRead(t testing.TB, s *Store, a Addr, want []byte) {
	t.Helper()
	buf := make([]byte, len(want)+7) // longer than needed on purpose
	if err := s.Read(a, buf); err != nil {
		t.Fatalf("Read(%v): %v", a, err)
	}
	if string(buf[:len(want)]) != string(want) {
		t.Fatalf("Read(%v): data differs", a)
	}
}

// dirState describes every entry under dir (type, size, content hash, mode),
// to show that a refused Open changed nothing.
func dirState(t testing.TB, dir string) map[string]string {
	t.Helper()
	state := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %v", info.Mode(), info.Size(), info.ModTime().UnixNano())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		state[p] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return state
}

func sameState(t testing.TB, before, after map[string]string) {
	t.Helper()
	for p, d := range before {
		if after[p] != d {
			t.Errorf("%s changed: %q -> %q", p, d, after[p])
		}
	}
	for p, d := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared: %q", p, d)
		}
	}
}

// flipByte inverts one byte of a file.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s at %d: %v", path, off, err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
