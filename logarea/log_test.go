package logarea

import (
	"context"
	"errors"
	"testing"
)

func TestAppendReplayReopen(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "snappy"}[compress], func(t *testing.T) {
			t.Parallel()
			devs := mems(1, 4<<20)
			mustFormat(t, devs)
			cfg := Config{Compression: compress, BufferSize: MinBufferSize}
			l := mustOpen(t, devs, cfg, nil)
			if got, last := replayAll(t, l, 0); len(got) != 0 || last != 0 {
				t.Fatalf("fresh log replayed %d records, last %d", len(got), last)
			}
			var want []Record
			for i := range uint64(200) {
				rec := makeRecord(i, 6000)
				if lsn := appendRec(t, l, rec); lsn != LSN(i+1) {
					t.Fatalf("lsn %d, want %d", lsn, i+1)
				}
				want = append(want, rec)
				if i%17 == 0 {
					if err := l.Sync(context.Background(), LSN(i+1)); err != nil {
						t.Fatal(err)
					}
				}
			}
			st := l.Stats()
			if compress && st.Compressed == 0 {
				t.Error("no record was compressed")
			}
			if !compress && st.Compressed != 0 {
				t.Error("records compressed with compression off")
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); !errors.Is(err, ErrClosed) {
				t.Errorf("second Close = %v", err)
			}
			l = mustOpen(t, devs, cfg, nil)
			defer l.Close()
			got, last := replayAll(t, l, 50)
			if last != 200 || len(got) != 150 {
				t.Fatalf("replayed %d records, last %d", len(got), last)
			}
			for i, g := range got {
				if g.lsn != LSN(51+i) || !equalRecord(g.rec, want[50+i]) {
					t.Fatalf("record %d: lsn %d, mismatch", i, g.lsn)
				}
			}
			if lsn := appendRec(t, l, makeRecord(1000, 10)); lsn != 201 {
				t.Fatalf("after reopen lsn %d, want 201", lsn)
			}
		})
	}
}

// TestCompressionSampling checks that incompressible payloads stop being
// tried (most are stored without an attempt), that compressible payloads
// after them are compressed again within maxCompressSkip records, and that
// every record replays intact either way.
func TestCompressionSampling(t *testing.T) {
	devs := mems(1, 8<<20)
	mustFormat(t, devs)
	cfg := Config{Compression: true}
	l := mustOpen(t, devs, cfg, nil)
	var want []Record
	const random = 200
	for i := range uint64(random) {
		rec := bigRecord(i, 4096)
		appendRec(t, l, rec)
		want = append(want, rec)
	}
	st := l.Stats()
	if st.Compressed != 0 || st.NotTried < random*3/4 {
		t.Fatalf("%d random payloads: %d compressed, %d stored without an attempt; want 0 and at least %d", random, st.Compressed, st.NotTried, random*3/4)
	}
	// Compressible payloads: after at most maxCompressSkip records
	// stored as they are, every one is compressed.
	const compressible = 2 * maxCompressSkip
	for i := range uint64(compressible) {
		rec := fixedRecord(i)
		appendRec(t, l, rec)
		want = append(want, rec)
	}
	st = l.Stats()
	if st.Compressed < compressible-maxCompressSkip {
		t.Fatalf("%d compressible payloads after random ones: %d compressed, want at least %d", compressible, st.Compressed, compressible-maxCompressSkip)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, devs, cfg, nil)
	defer l.Close()
	got, _ := replayAll(t, l, 0)
	if len(got) != len(want) {
		t.Fatalf("replayed %d records, want %d", len(got), len(want))
	}
	for i, g := range got {
		if !equalRecord(g.rec, want[i]) {
			t.Fatalf("record %d differs after replay", i+1)
		}
	}
}
