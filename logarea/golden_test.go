package logarea

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/internal/device"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden log images under testdata/")

// goldenV1 is a two-replica log written by format version 1: records 1..40
// (goldenRecord), trimmed to 10, records 41..45 committed and synced after a
// crash-free reopen, then closed cleanly. Regenerate with
// `go test ./logarea -run Golden -update` only when the format version
// changes, keeping the old image.
const goldenV1 = "testdata/v1-2replicas.img.gz"

func goldenRecord(i uint64) Record {
	r := makeRecord(i, 3000)
	if i%5 == 0 {
		r.Payload = nil
	}
	return r
}

func writeGolden(t *testing.T) {
	devs := mems(2, MinSize(Config{}))
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{Compression: true}, nil)
	for i := uint64(1); i <= 40; i++ {
		appendRec(t, l, goldenRecord(i))
	}
	if err := l.Sync(context.Background(), 40); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(10); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, devs, Config{Compression: true}, nil)
	replayAll(t, l, 10)
	for i := uint64(41); i <= 45; i++ {
		appendRec(t, l, goldenRecord(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, d := range devs {
		zw.Write(d.(*device.Mem).Bytes())
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenV1, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGoldenImage opens a log written by an earlier build: a format change
// that breaks reading it fails here.
func TestGoldenImage(t *testing.T) {
	if *updateGolden {
		writeGolden(t)
	}
	f, err := os.Open(filepath.FromSlash(goldenV1))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	img, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	size := int(MinSize(Config{}))
	if len(img) != 2*size {
		t.Fatalf("golden image has %d bytes, want %d", len(img), 2*size)
	}
	devs := []device.Device{device.NewMemFrom("g1", img[size:]), device.NewMemFrom("g0", img[:size])}
	tl := newTestLog()
	l := mustOpen(t, devs, Config{}, tl)
	defer l.Close()
	got, last := replayAll(t, l, 10)
	if len(got) != 35 || last != 45 {
		t.Fatalf("replayed %d records up to %d, want 11..45\n%s", len(got), last, tl.dump())
	}
	for _, g := range got {
		if !equalRecord(g.rec, goldenRecord(uint64(g.lsn))) {
			t.Fatalf("lsn %d differs from what was written", g.lsn)
		}
	}
	if n := tl.count(logrus.WarnLevel, ""); n != 0 {
		t.Errorf("%d warnings opening a cleanly closed log\n%s", n, tl.dump())
	}
	if lsn := appendRec(t, l, goldenRecord(46)); lsn != 46 {
		t.Errorf("next lsn %d", lsn)
	}
}

// TestWireFormat pins the encoding of a record header and a superblock.
func TestWireFormat(t *testing.T) {
	h := recHeader{lsn: 7, synced: 5, obj: 0x1122, off: 4096, length: 100, stored: 90, pcrc: 0xdeadbeef, epoch: 3, typ: 9, flags: 2, rflags: rflagSnappy}
	b := make([]byte, headerSize)
	encodeHeader(b, &h, nonceSeed(42))
	const wantHdr = "6463 4c52 e1a2 b48a 0700000000000000 0500000000000000 2211000000000000 0010000000000000 64000000 5a000000 efbeadde 03000000 090201 0000000000"
	if got := hex.EncodeToString(b); got != stripSpaces(wantHdr) {
		t.Errorf("record header\n got %s\nwant %s", got, stripSpaces(wantHdr))
	}
	back, why := decodeHeader(b, nonceSeed(42))
	if why != "" || back != h {
		t.Errorf("decode: %+v %q", back, why)
	}
	if _, why := decodeHeader(b, nonceSeed(43)); why == "" {
		t.Error("a header checks out under another log id")
	}

	sb := superblock{fsID: testFS, nonce: 42, seq: 9, replicaIndex: 1, replicaCount: 3, devSize: 1 << 30, areaOff: areaOffset,
		areaSize: 1<<30 - areaOffset, tailLSN: 100, tailPos: 8192, nextLSN: 120, nextPos: 16384, epoch: 4, flags: sbFlagClean, epochStart: 90, formatTime: 1}
	sbuf := make([]byte, sbEncodedSize)
	sb.encode(sbuf)
	const wantSB = "44434c4f47534200 01000000 fc7b268c dcac4e0102030405060708090a0b0c0d 2a00000000000000 0900000000000000 01000000 03000000 0000004000000000 0040000000000000 00c0ff3f00000000 6400000000000000 0020000000000000 7800000000000000 0040000000000000 04000000 01000000 5a00000000000000 0100000000000000"
	if got := hex.EncodeToString(sbuf[:136]); got != stripSpaces(wantSB) {
		t.Errorf("superblock\n got %s\nwant %s", got, stripSpaces(wantSB))
	}
	if !isZero(sbuf[136:]) {
		t.Error("superblock padding not zero")
	}
	back2, st, _, why := decodeSuperblock(sbuf)
	if st != slotOK || back2 != sb {
		t.Errorf("decode superblock: %v %q %+v", st, why, back2)
	}
}

func stripSpaces(s string) string {
	return string(bytes.ReplaceAll([]byte(s), []byte(" "), nil))
}
