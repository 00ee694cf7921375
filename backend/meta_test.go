package backend

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type metaSpec struct {
	kind MetaKind
	seq  uint64
	size int
}

// metaContent is the stream written for a spec.
func metaContent(m metaSpec) []byte { return payload(uint64(m.kind)<<32|m.seq, m.size) }

// writeMeta commits a meta file holding metaContent(m).
func writeMeta(t testing.TB, s *Store, m metaSpec) {
	t.Helper()
	writeMetaBytes(t, s, m.kind, m.seq, metaContent(m))
}

// writeMetaBytes commits a meta file, writing data in uneven pieces.
func writeMetaBytes(t testing.TB, s *Store, kind MetaKind, seq uint64, data []byte) {
	t.Helper()
	w, err := s.CreateMeta(kind, seq)
	if err != nil {
		t.Fatalf("CreateMeta(%v, %d): %v", kind, seq, err)
	}
	for i, step := 0, 1; i < len(data); step = step*3 + 1 {
		j := min(len(data), i+step)
		if n, err := w.Write(data[i:j]); err != nil || n != j-i {
			t.Fatalf("Write = %d, %v", n, err)
		}
		i = j
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("Commit(%v %d): %v", kind, seq, err)
	}
}

// readMeta reads a whole meta stream.
func readMeta(mf *MetaFile) ([]byte, error) {
	r, err := mf.Open()
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return b, err
}

func TestMetaRoundTrip(t *testing.T) {
	cp, d := MetaCheckpoint, MetaDelta
	tests := []struct {
		name       string
		files      []metaSpec
		wantCP     uint64 // 0: none
		wantDeltas []uint64
	}{
		{"empty", nil, 0, nil},
		{"deltas only", []metaSpec{{d, 1, 10}, {d, 2, 0}, {d, 3, 5000}}, 0, []uint64{1, 2, 3}},
		{"checkpoint only", []metaSpec{{cp, 4, 100}}, 4, nil},
		{"checkpoint and deltas", []metaSpec{{cp, 5, 3 << 20}, {d, 6, 70_000}, {d, 7, 1}}, 5, []uint64{6, 7}},
		{"newest checkpoint wins", []metaSpec{{cp, 3, 10}, {d, 4, 10}, {cp, 6, 20}, {d, 7, 30}, {d, 8, 40}}, 6, []uint64{7, 8}},
		{"delta with the checkpoint's number", []metaSpec{{d, 5, 1}, {cp, 5, 2}, {d, 6, 3}}, 5, []uint64{6}},
		{"empty checkpoint stream", []metaSpec{{cp, 1, 0}}, 1, nil},
		{"stream of exactly the write buffer", []metaSpec{{cp, 1, metaWriteBuf - metaHdrLen}, {d, 2, metaWriteBuf}}, 1, []uint64{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := mustOpen(t, OSFS{}, dir, Config{})
			sizes := map[metaSpec]int{}
			for _, m := range tt.files {
				writeMeta(t, s, m)
				sizes[metaSpec{m.kind, m.seq, 0}] = m.size
			}
			s.Close()
			s = mustOpen(t, OSFS{}, dir, Config{})

			gotCP, deltas, err := s.LoadMeta()
			if err != nil {
				t.Fatalf("LoadMeta: %v", err)
			}
			check := func(mf *MetaFile, kind MetaKind, seq uint64) {
				t.Helper()
				if mf.Kind != kind || mf.Seq != seq {
					t.Fatalf("got %v %d, want %v %d", mf.Kind, mf.Seq, kind, seq)
				}
				want := metaContent(metaSpec{kind, seq, sizes[metaSpec{kind, seq, 0}]})
				if mf.Size != int64(len(want)) {
					t.Errorf("%v %d: Size %d, want %d", kind, seq, mf.Size, len(want))
				}
				got, err := readMeta(mf)
				if err != nil {
					t.Fatalf("read %v %d: %v", kind, seq, err)
				}
				if string(got) != string(want) {
					t.Errorf("%v %d: stream differs (%d bytes, want %d)", kind, seq, len(got), len(want))
				}
			}
			if tt.wantCP == 0 && gotCP != nil {
				t.Errorf("checkpoint %d, want none", gotCP.Seq)
			}
			if tt.wantCP != 0 {
				if gotCP == nil {
					t.Fatalf("no checkpoint, want %d", tt.wantCP)
				}
				check(gotCP, MetaCheckpoint, tt.wantCP)
			}
			if len(deltas) != len(tt.wantDeltas) {
				t.Fatalf("%d deltas, want %v", len(deltas), tt.wantDeltas)
			}
			for i, seq := range tt.wantDeltas {
				check(deltas[i], MetaDelta, seq)
			}
		})
	}
}

func TestMetaReplaceSameSequence(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{})
	writeMeta(t, s, metaSpec{MetaCheckpoint, 1, 100})
	writeMeta(t, s, metaSpec{MetaCheckpoint, 1, 7})
	cp, _, err := s.LoadMeta()
	if err != nil {
		t.Fatal(err)
	}
	got, err := readMeta(cp)
	if err != nil || string(got) != string(metaContent(metaSpec{MetaCheckpoint, 1, 7})) {
		t.Errorf("replaced checkpoint: %d bytes, %v", len(got), err)
	}
}

// corruptCase damages the files of a backend holding checkpoint 2 (stream
// of 300000 bytes) and deltas 3 and 4.
type corruptCase struct {
	name   string
	damage func(t *testing.T, s *Store, dir string)
	// Where the damage shows: in LoadMeta, or only when the stream is read.
	atLoad bool
	check  func(error) bool
	want   string
}

func metaPath(dir string, k MetaKind, seq uint64) string {
	return filepath.Join(dir, metaDir, metaName(k, seq))
}

func TestMetaCorruptionDetected(t *testing.T) {
	cp2 := func(dir string) string { return metaPath(dir, MetaCheckpoint, 2) }
	tests := []corruptCase{
		{"flipped stream byte", func(t *testing.T, s *Store, dir string) {
			flipByte(t, cp2(dir), metaHdrLen+123_456)
		}, false, IsCorruption, "crc"},
		{"flipped last stream byte", func(t *testing.T, s *Store, dir string) {
			flipByte(t, cp2(dir), metaHdrLen+300_000-1)
		}, false, IsCorruption, "crc"},
		{"flipped trailer crc", func(t *testing.T, s *Store, dir string) {
			flipByte(t, cp2(dir), metaHdrLen+300_000+9)
		}, false, IsCorruption, "crc"},
		{"flipped header byte", func(t *testing.T, s *Store, dir string) {
			flipByte(t, cp2(dir), 30)
		}, true, IsCorruption, "header crc"},
		{"flipped trailer length", func(t *testing.T, s *Store, dir string) {
			flipByte(t, cp2(dir), metaHdrLen+300_000+1)
		}, true, IsCorruption, "trailer says"},
		{"truncated by one byte", func(t *testing.T, s *Store, dir string) {
			os.Truncate(cp2(dir), metaHdrLen+300_000+metaTrailerLen-1)
		}, true, IsCorruption, "trailer"},
		{"truncated to the header", func(t *testing.T, s *Store, dir string) {
			os.Truncate(cp2(dir), 10)
		}, true, IsCorruption, "shorter than header"},
		{"garbage appended", func(t *testing.T, s *Store, dir string) {
			f, _ := os.OpenFile(cp2(dir), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0})
			f.Close()
		}, true, IsCorruption, "trailer"},
		{"renamed to another sequence number", func(t *testing.T, s *Store, dir string) {
			os.Rename(cp2(dir), metaPath(dir, MetaCheckpoint, 9))
			os.Rename(metaPath(dir, MetaDelta, 3), metaPath(dir, MetaDelta, 10))
			os.Rename(metaPath(dir, MetaDelta, 4), metaPath(dir, MetaDelta, 11))
		}, true, IsCorruption, "name says 9"},
		{"delta renamed to checkpoint", func(t *testing.T, s *Store, dir string) {
			os.Rename(metaPath(dir, MetaDelta, 4), metaPath(dir, MetaCheckpoint, 4))
		}, true, IsCorruption, "header kind delta"},
		{"from another filesystem", func(t *testing.T, s *Store, dir string) {
			other := mustOpen(t, OSFS{}, t.TempDir(), Config{})
			writeMeta(t, other, metaSpec{MetaDelta, 3, 10})
			b, _ := os.ReadFile(metaPath(other.dir, MetaDelta, 3))
			os.WriteFile(metaPath(dir, MetaDelta, 3), b, 0o644)
		}, true, IsCorruption, "belongs to filesystem"},
		{"newer format version", func(t *testing.T, s *Store, dir string) {
			p := metaPath(dir, MetaDelta, 3)
			b, _ := os.ReadFile(p)
			le.PutUint32(b[8:], FormatVersion+1)
			le.PutUint32(b[40:], crc(b[:40]))
			os.WriteFile(p, b, 0o644)
		}, true, func(err error) bool { return errors.Is(err, ErrVersion) }, "version 2"},
		{"malformed name", func(t *testing.T, s *Store, dir string) {
			os.WriteFile(filepath.Join(dir, metaDir, "delta-12"), nil, 0o644)
		}, true, IsCorruption, "malformed"},
		{"gap after the checkpoint", func(t *testing.T, s *Store, dir string) {
			os.Remove(metaPath(dir, MetaDelta, 3))
		}, true, func(err error) bool { return errors.Is(err, ErrMetaGap) && IsCorruption(err) }, "delta-0000000000000003"},
		{"gap between deltas", func(t *testing.T, s *Store, dir string) {
			os.Rename(metaPath(dir, MetaDelta, 4), metaPath(dir, MetaDelta, 5))
		}, true, func(err error) bool { return errors.Is(err, ErrMetaGap) }, "next delta found is 5"},
		{"gap without checkpoint", func(t *testing.T, s *Store, dir string) {
			os.Remove(cp2(dir))
		}, true, func(err error) bool { return errors.Is(err, ErrMetaGap) }, "delta-0000000000000001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := mustOpen(t, OSFS{}, dir, Config{})
			writeMeta(t, s, metaSpec{MetaCheckpoint, 2, 300_000})
			writeMeta(t, s, metaSpec{MetaDelta, 3, 50})
			writeMeta(t, s, metaSpec{MetaDelta, 4, 60})
			tt.damage(t, s, dir)

			cp, deltas, err := s.LoadMeta()
			if tt.atLoad {
				if err == nil || !tt.check(err) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("LoadMeta = %v, want an error mentioning %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadMeta: %v (damage should show only when reading)", err)
			}
			if cp == nil || len(deltas) != 2 {
				t.Fatalf("LoadMeta = %v, %d deltas", cp, len(deltas))
			}
			// Read to the end: the corruption comes instead of io.EOF.
			_, err = readMeta(cp)
			if !tt.check(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("reading the stream = %v, want an error mentioning %q", err, tt.want)
			}
			// Read part of it and Close: Close reads the rest and reports.
			r, err := cp.Open()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(r, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); !tt.check(err) {
				t.Errorf("Close after a partial read = %v, want corruption", err)
			}
		})
	}
}

func TestMetaReaderVerifiesAtLastByte(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{})
	writeMeta(t, s, metaSpec{MetaDelta, 1, 5000})
	flipByte(t, metaPath(s.dir, MetaDelta, 1), metaHdrLen+10)
	_, deltas, err := s.LoadMeta()
	if err != nil {
		t.Fatal(err)
	}
	r, err := deltas[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// A reader that asks for exactly the stream length learns of the
	// corruption in the same call, without a further Read.
	n, err := r.Read(make([]byte, 5000))
	for err == nil && n < 5000 {
		var k int
		k, err = r.Read(make([]byte, 5000-n))
		n += k
	}
	if !IsCorruption(err) {
		t.Errorf("Read of the last byte = %d, %v; want corruption", n, err)
	}
	if _, err := r.Read(make([]byte, 1)); !IsCorruption(err) {
		t.Errorf("Read after corruption = %v", err)
	}
}

func TestMetaWriterLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, OSFS{}, dir, Config{})
	entries := func() []string {
		ents, err := os.ReadDir(filepath.Join(dir, metaDir))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}

	if _, err := s.CreateMeta(MetaKind(7), 1); err == nil {
		t.Errorf("CreateMeta of an unknown kind succeeded")
	}
	if _, err := s.CreateMeta(MetaDelta, 0); err == nil {
		t.Errorf("CreateMeta with sequence 0 succeeded")
	}

	w, err := s.CreateMeta(MetaCheckpoint, 1)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("aborted"))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if names := entries(); len(names) != 0 {
		t.Errorf("after Abort meta/ holds %v", names)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrMetaDone) {
		t.Errorf("Write after Abort = %v", err)
	}

	w, _ = s.CreateMeta(MetaCheckpoint, 1)
	w.Write([]byte("kept"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); !errors.Is(err, ErrMetaDone) {
		t.Errorf("second Commit = %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit = %v, want nil", err)
	}
	if names := entries(); len(names) != 1 || names[0] != metaName(MetaCheckpoint, 1) {
		t.Errorf("after Commit meta/ holds %v", names)
	}

	// A writer left open when the store closes never becomes visible, and
	// its temp file is removed by the next Open.
	w, _ = s.CreateMeta(MetaDelta, 2)
	w.Write([]byte("unfinished"))
	if names := entries(); len(names) != 2 {
		t.Fatalf("meta/ holds %v, want the checkpoint and a temp file", names)
	}
	if _, deltas, err := s.LoadMeta(); err != nil || len(deltas) != 0 {
		t.Errorf("LoadMeta with a writer open = %d deltas, %v", len(deltas), err)
	}
	s.Close()
	if err := w.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close = %v, want ErrClosed", err)
	}
	s = mustOpen(t, OSFS{}, dir, Config{})
	w, _ = s.CreateMeta(MetaDelta, 3)
	w.Write([]byte("crash"))
	w.(*metaWriter).flush()
	w.(*metaWriter).f.Close() // the process dies here
	s.Close()
	mustOpen(t, OSFS{}, dir, Config{})
	if names := entries(); len(names) != 1 || names[0] != metaName(MetaCheckpoint, 1) {
		t.Errorf("after reopen meta/ holds %v", names)
	}
}

func TestRemoveMetaBefore(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{})
	for _, m := range []metaSpec{
		{MetaCheckpoint, 3, 10}, {MetaDelta, 4, 10}, {MetaDelta, 5, 10},
		{MetaCheckpoint, 6, 10}, {MetaDelta, 6, 10}, {MetaDelta, 7, 10},
	} {
		writeMeta(t, s, m)
	}
	os.WriteFile(filepath.Join(s.dir, metaDir, "README"), []byte("not ours"), 0o644)

	for _, seq := range []uint64{99, 4} { // no such checkpoint, a delta's number
		if err := s.RemoveMetaBefore(seq); !errors.Is(err, ErrNoCheckpoint) {
			t.Errorf("RemoveMetaBefore(%d) = %v, want ErrNoCheckpoint", seq, err)
		}
	}
	if err := s.RemoveMetaBefore(6); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(s.dir, metaDir))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{"README", metaName(MetaCheckpoint, 6), metaName(MetaDelta, 7)}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("meta/ holds %v, want %v", names, want)
	}
	cp, deltas, err := s.LoadMeta()
	if err != nil || cp == nil || cp.Seq != 6 || len(deltas) != 1 || deltas[0].Seq != 7 {
		t.Errorf("LoadMeta after removal = %+v, %d deltas, %v", cp, len(deltas), err)
	}
}
