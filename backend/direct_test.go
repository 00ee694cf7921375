package backend

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// openFlags returns the open flags of this process's descriptor for path,
// from /proc/self/fdinfo, and whether one was found.
func openFlags(t *testing.T, path string) (int, bool) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err != nil || target != path {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", fd.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatalf("fdinfo flags %q: %v", v, err)
				}
				return int(flags), true
			}
		}
	}
	return 0, false
}

// TestSegmentsWrittenWithDirectIO: by default the open segment is written
// with O_DIRECT, records of every size read back (from the write buffer
// and from the file), and the same after reopening; with Buffered it is not.
func TestSegmentsWrittenWithDirectIO(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer, Buffered: buffered}
			s := mustOpen(t, OSFS{}, dir, cfg)
			var addrs []Addr
			var data [][]byte
			// Odd sizes, so that records are padded, and enough of them to
			// fill the write buffer several times and start new segments.
			for i := range 300 {
				p := payload(uint64(i), 1+(i*7919)%(3*BlockSize+100))
				addrs = append(addrs, mustAppend(t, s, p))
				data = append(data, p)
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			seg := filepath.Join(dir, segmentsDir, segmentName(addrs[len(addrs)-1].Segment))
			flags, ok := openFlags(t, seg)
			if !ok {
				t.Fatalf("the active segment %s is not open", seg)
			}
			if direct := flags&syscall.O_DIRECT != 0; direct == buffered {
				if direct {
					t.Fatalf("segment opened with O_DIRECT (flags %o) although Buffered is set", flags)
				}
				// The filesystem of the test's temporary directory may not
				// do direct I/O; then the store must have said so.
				t.Skipf("segment not opened with O_DIRECT (flags %o): %s does not support it", flags, dir)
			}
			for i, a := range addrs {
				checkRead(t, s, a, data[i])
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2 := mustOpen(t, OSFS{}, dir, cfg)
			for i, a := range addrs {
				checkRead(t, s2, a, data[i])
			}
		})
	}
}

// noDirectFS refuses O_DIRECT the way Linux does on a filesystem without
// direct I/O: the file is created, then the open fails with EINVAL.
type noDirectFS struct {
	OSFS
	refused int
}

func (f *noDirectFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if flag&syscall.O_DIRECT != 0 {
		f.refused++
		if flag&os.O_CREATE != 0 {
			if fl, err := os.OpenFile(name, flag&^syscall.O_DIRECT, perm); err == nil {
				fl.Close()
			}
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EINVAL}
	}
	return f.OSFS.OpenFile(name, flag, perm)
}

// TestDirectIOFallsBackToBuffered: on a filesystem that refuses O_DIRECT
// the store warns once, removes the empty file the refused open left, and
// writes every segment through the page cache; nothing is lost.
func TestDirectIOFallsBackToBuffered(t *testing.T) {
	dir := t.TempDir()
	fsys := &noDirectFS{}
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.WarnLevel)
	s, _, err := Open(fsys, dir, Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer}, logrus.NewEntry(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var addrs []Addr
	var data [][]byte
	for i := range 40 { // 40 × 100 KiB: a few segments of 1 MiB
		p := payload(uint64(i), 100<<10)
		addrs = append(addrs, mustAppend(t, s, p))
		data = append(data, p)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if addrs[len(addrs)-1].Segment == addrs[0].Segment {
		t.Fatal("the test meant to fill more than one segment")
	}
	if fsys.refused != 1 {
		t.Errorf("O_DIRECT tried %d times, want once", fsys.refused)
	}
	warned := 0
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "direct I/O") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d warnings about direct I/O, want 1", warned)
	}
	for i, a := range addrs {
		buf := make([]byte, len(data[i]))
		if err := s.Read(a, buf); err != nil || !bytes.Equal(buf, data[i]) {
			t.Fatalf("record %d (%v) did not read back: %v", i, a, err)
		}
	}
}
