package backend

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// The golden image under testdata/golden-v1 is a backend written by the
// format-version-1 code. It must stay readable, and today's writers must
// still produce the same bytes (apart from the uuid and the checksums that
// cover it). Regenerate it only with a new format version:
//
//	go test ./backend -run TestGoldenV1 -update-golden
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden-v1")

const goldenDir = "testdata/golden-v1"

var goldenSizes = []int{1, 4096, 5000, 20_000}

// Offsets of the golden records, from the format: 4 KiB header, records
// aligned to 4 KiB.
var goldenOffsets = []uint64{4096, 8192, 12288, 20480}

const goldenSegmentLen = 40960

func goldenRecord(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*31 + j*7 + j>>8)
	}
	return b
}

func goldenMeta() []metaSpec {
	return []metaSpec{{MetaCheckpoint, 1, 3000}, {MetaDelta, 2, 17}}
}

func goldenMetaContent(m metaSpec) []byte { return goldenRecord(100+int(m.seq), m.size) }

// writeGolden builds the golden backend in dir with the current code.
func writeGolden(t *testing.T, dir string) []Addr {
	t.Helper()
	s, _, err := Open(OSFS{}, dir, Config{SegmentSize: MinSegmentSize}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	var addrs []Addr
	for i, n := range goldenSizes {
		addrs = append(addrs, mustAppend(t, s, goldenRecord(i, n)))
	}
	for _, m := range goldenMeta() {
		writeMetaBytes(t, s, m.kind, m.seq, goldenMetaContent(m))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return addrs
}

func copyTree(t *testing.T, from, to string, skip map[string]bool) {
	t.Helper()
	err := filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if skip[rel] {
			return nil
		}
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sameExcept compares two files byte for byte outside the given ranges.
func sameExcept(t *testing.T, a, b string, ignore ...[2]int) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != len(y) {
		t.Fatalf("%s: %d bytes, golden has %d", filepath.Base(a), len(x), len(y))
	}
	for i := range x {
		skip := false
		for _, r := range ignore {
			if i >= r[0] && i < r[1] {
				skip = true
			}
		}
		if !skip && x[i] != y[i] {
			t.Fatalf("%s differs from the golden image at byte %d", filepath.Base(a), i)
		}
	}
}

func TestGoldenV1(t *testing.T) {
	if *updateGolden {
		tmp := t.TempDir()
		writeGolden(t, tmp)
		os.RemoveAll(goldenDir)
		copyTree(t, tmp, goldenDir, map[string]bool{lockName: true})
	}

	// Today's code reads the golden image.
	dir := t.TempDir()
	copyTree(t, goldenDir, dir, nil)
	s, created, err := Open(OSFS{}, dir, Config{}, testLog(t))
	if err != nil {
		t.Fatalf("Open golden image: %v", err)
	}
	if created {
		t.Fatalf("golden image was not recognised as a backend")
	}
	if s.SegmentSize() != MinSegmentSize {
		t.Errorf("segment size %d", s.SegmentSize())
	}
	for i, n := range goldenSizes {
		want := goldenRecord(i, n)
		a := Addr{Segment: 1, Off: goldenOffsets[i], Len: uint32(n), CRC: crc(want)}
		checkRead(t, s, a, want)
	}
	cp, deltas, err := s.LoadMeta()
	if err != nil {
		t.Fatal(err)
	}
	got := append([]*MetaFile{cp}, deltas...)
	if cp == nil || len(got) != len(goldenMeta()) {
		t.Fatalf("LoadMeta of golden image = %v, %d deltas", cp, len(deltas))
	}
	for i, m := range goldenMeta() {
		b, err := readMeta(got[i])
		if err != nil || got[i].Kind != m.kind || got[i].Seq != m.seq || string(b) != string(goldenMetaContent(m)) {
			t.Errorf("golden %v %d: got %v %d, %d bytes, %v", m.kind, m.seq, got[i].Kind, got[i].Seq, len(b), err)
		}
	}
	s.Close()

	// Superblock fields encode to the same bytes.
	sbPath := filepath.Join(goldenDir, superblockName)
	raw, err := os.ReadFile(sbPath)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := decodeSuperblock(sbPath, raw)
	if err != nil {
		t.Fatal(err)
	}
	if string(sb.encode()) != string(raw) {
		t.Errorf("superblock encoding changed")
	}

	// Today's writers produce the same bytes, except the uuid and the CRCs over it.
	fresh := t.TempDir()
	addrs := writeGolden(t, fresh)
	for i, a := range addrs {
		if a.Segment != 1 || a.Off != goldenOffsets[i] {
			t.Errorf("record %d now at %v, golden at 1:%d", i, a, goldenOffsets[i])
		}
	}
	seg := filepath.Join(segmentsDir, segmentName(1))
	if st, err := os.Stat(filepath.Join(goldenDir, seg)); err != nil || st.Size() != goldenSegmentLen {
		t.Errorf("golden segment: %v, %v", st, err)
	}
	sameExcept(t, filepath.Join(fresh, seg), filepath.Join(goldenDir, seg), [2]int{16, 32}, [2]int{40, 44})
	for _, m := range goldenMeta() {
		name := filepath.Join(metaDir, metaName(m.kind, m.seq))
		end := metaHdrLen + m.size
		sameExcept(t, filepath.Join(fresh, name), filepath.Join(goldenDir, name),
			[2]int{24, 44}, [2]int{end + 8, end + 12})
	}
	sameExcept(t, filepath.Join(fresh, superblockName), sbPath, [2]int{16, 40}, [2]int{60, 64})
}
