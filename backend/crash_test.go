package backend

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestCrashRecovery runs random workloads on a crashFS, cuts the power at
// the end, and checks what a reopen finds: every record appended before a
// successful Sync reads back, no record reads back wrong, and the metadata
// is exactly what was committed. Strict crashes keep only durable state;
// the others also keep random unsynced data and directory changes.
func TestCrashRecovery(t *testing.T) {
	for seed := range uint64(16) {
		for _, strict := range []bool{true, false} {
			t.Run(fmt.Sprintf("seed=%d/strict=%v", seed, strict), func(t *testing.T) {
				t.Parallel()
				crashRun(t, seed, strict)
			})
		}
	}
}

func crashRun(t *testing.T, seed uint64, strict bool) {
	rng := rand.New(rand.NewPCG(seed, 42))
	const dir = "/data/backend"
	cfg := Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer}
	fsys := newCrashFS()
	s, created, err := Open(fsys, dir, cfg, testLog(t))
	if err != nil || !created {
		t.Fatalf("Open = %v, created %v", err, created)
	}

	var durable, unsynced []rec
	var cpSeq uint64                // newest committed checkpoint
	metaData := map[uint64][]byte{} // committed deltas after cpSeq, and the checkpoint
	nextSeq := uint64(1)
	var open MetaWriter // a writer left uncommitted at the crash

	steps := 30 + rng.IntN(90)
	for range steps {
		switch x := rng.IntN(100); {
		case x < 65:
			p := payload(rng.Uint64(), 1+rng.IntN(200_000))
			unsynced = append(unsynced, rec{mustAppend(t, s, p), p})
		case x < 80:
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			durable, unsynced = append(durable, unsynced...), nil
		case x < 92:
			p := payload(rng.Uint64(), rng.IntN(20_000))
			writeMetaBytes(t, s, MetaDelta, nextSeq, p)
			metaData[nextSeq] = p
			nextSeq++
		case x < 97:
			p := payload(rng.Uint64(), rng.IntN(50_000))
			writeMetaBytes(t, s, MetaCheckpoint, nextSeq, p)
			if err := s.RemoveMetaBefore(nextSeq); err != nil {
				t.Fatal(err)
			}
			cpSeq = nextSeq
			metaData = map[uint64][]byte{cpSeq: p}
			nextSeq++
		default:
			if open == nil {
				if open, err = s.CreateMeta(MetaDelta, nextSeq); err != nil {
					t.Fatal(err)
				}
				open.Write(payload(rng.Uint64(), rng.IntN(100_000)))
			}
		}
	}

	var crng *rand.Rand
	if !strict {
		crng = rng
	}
	after := fsys.crash(crng)
	s2, created, err := Open(after, dir, cfg, testLog(t))
	if err != nil || created {
		t.Fatalf("Open after crash = %v, created %v", err, created)
	}
	defer s2.Close()

	for _, r := range durable {
		checkRead(t, s2, r.a, r.data)
	}
	for _, r := range unsynced {
		buf := make([]byte, r.a.Len)
		if err := s2.Read(r.a, buf); err == nil && string(buf) != string(r.data) {
			t.Errorf("unsynced record %v read back wrong data without an error", r.a)
		}
	}

	cp, deltas, err := s2.LoadMeta()
	if err != nil {
		t.Fatalf("LoadMeta after crash: %v", err)
	}
	var got []*MetaFile
	if cpSeq == 0 {
		if cp != nil {
			t.Fatalf("checkpoint %d found, none committed", cp.Seq)
		}
	} else {
		if cp == nil || cp.Seq != cpSeq {
			t.Fatalf("checkpoint %v after crash, want %d", cp, cpSeq)
		}
		got = append(got, cp)
	}
	got = append(got, deltas...)
	if len(got) != len(metaData) {
		t.Fatalf("%d meta files after crash, want %d", len(got), len(metaData))
	}
	for _, mf := range got {
		b, err := readMeta(mf)
		if err != nil || string(b) != string(metaData[mf.Seq]) {
			t.Errorf("%v %d after crash: %d bytes, %v", mf.Kind, mf.Seq, len(b), err)
		}
	}

	// The recovered store takes new work.
	p := payload(seed, 10_000)
	a := mustAppend(t, s2, p)
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
	checkRead(t, s2, a, p)
	for _, r := range durable {
		if a.Segment == r.a.Segment {
			t.Fatalf("append after crash went into segment %d, which holds durable records", a.Segment)
		}
	}
}
