package logarea

import (
	"bytes"
	"context"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/internal/device"
)

// fixedRecord has a 1500-byte payload, so that every record spans several
// sectors and a test can damage its middle.
func fixedRecord(i uint64) Record {
	r := makeRecord(i, 0)
	r.Payload = bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, 500)
	return r
}

// crashImage writes batches of five records on a fresh single-replica log,
// syncing the batches marked true and only waiting for the others to be
// written, then returns the device image at that moment (as a crash would
// leave it, unsynced writes included) and each record's device offset
// (offs[lsn], with offs[n+1] the end of the last record).
func crashImage(t *testing.T, synced []bool, trim LSN) ([]byte, []int64) {
	t.Helper()
	devs := mems(1, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	var lsn LSN
	for _, s := range synced {
		for range 5 {
			lsn = appendRec(t, l, fixedRecord(uint64(lsn)+1))
		}
		if s {
			if err := l.Sync(context.Background(), lsn); err != nil {
				t.Fatal(err)
			}
		} else {
			waitWritten(l, lsn)
		}
	}
	if trim > 0 {
		if err := l.Trim(trim); err != nil {
			t.Fatal(err)
		}
	}
	offs := make([]int64, lsn+2)
	for i := LSN(1); i <= lsn; i++ {
		offs[i] = physical(l, i)
	}
	offs[lsn+1] = physical(l, lsn+1)
	img := devs[0].(*device.Mem).Bytes()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return img, offs
}

// TestCorruptionTable follows etcd's WAL repair tests: for each kind of
// damage, what Open and Replay make of it.
func TestCorruptionTable(t *testing.T) {
	s, u := true, false
	tests := []struct {
		name    string
		batches []bool
		trim    LSN
		damage  func(img []byte, offs []int64)
		want    int  // records replayed
		corrupt bool // Open refuses with a corruption error
		torn    bool // a torn tail is reported at Warn
	}{
		{name: "intact", batches: []bool{s, s, u}, want: 15},
		{
			name: "truncate inside a record", batches: []bool{s, s, s},
			damage: func(img []byte, offs []int64) { clear(img[offs[11]+100:]) },
			want:   10, torn: true,
		},
		{
			name: "truncate at a record boundary", batches: []bool{s, s, s},
			damage: func(img []byte, offs []int64) { clear(img[offs[11]:]) },
			want:   10,
		},
		{
			name: "tear last write", batches: []bool{s, s, u},
			damage: func(img []byte, offs []int64) { clear(img[offs[13]+100 : offs[13]+612]) },
			want:   12, torn: true,
		},
		{
			name: "tear last write, first sector lost", batches: []bool{s, s, u},
			damage: func(img []byte, offs []int64) { clear(img[offs[11] : offs[11]+512]) },
			want:   10, torn: true,
		},
		{
			name: "tear middle write", batches: []bool{s, u, u},
			damage: func(img []byte, offs []int64) { clear(img[offs[8]+200 : offs[8]+712]) },
			want:   7, torn: true,
		},
		{
			name: "lose middle write", batches: []bool{s, u, u},
			damage: func(img []byte, offs []int64) { clear(img[offs[6]:offs[11]]) },
			want:   5, torn: true, // records 11..15 were written after the hole

		},
		{
			name: "flip a payload bit in a middle record", batches: []bool{s, s, s, s},
			damage:  func(img []byte, offs []int64) { img[offs[7]+headerSize+700] ^= 0x10 },
			corrupt: true,
		},
		{
			name: "flip a header bit in a middle record", batches: []bool{s, s, s, s},
			damage:  func(img []byte, offs []int64) { img[offs[7]+9] ^= 0x01 },
			corrupt: true,
		},
		{
			name: "zero a sector of a synced middle record", batches: []bool{s, s, s},
			damage:  func(img []byte, offs []int64) { clear(img[offs[7] : offs[7]+512]) },
			corrupt: true,
		},
		{
			name: "damage below the superblock's durable mark", batches: []bool{s, s, s}, trim: 3,
			damage:  func(img []byte, offs []int64) { img[offs[15]+headerSize+10] ^= 0xff },
			corrupt: true,
		},
		{
			name: "damage superblock slot 0", batches: []bool{s, s, s},
			damage: func(img []byte, offs []int64) { img[40] ^= 0xff },
			want:   15,
		},
		{
			name: "damage superblock slot 1", batches: []bool{s, s, s},
			damage: func(img []byte, offs []int64) { img[sbSlotSize+40] ^= 0xff },
			want:   15,
		},
		{
			name: "damage both superblock slots", batches: []bool{s, s, s},
			damage:  func(img []byte, offs []int64) { img[40] ^= 0xff; img[sbSlotSize+100] ^= 0xff },
			corrupt: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img, offs := crashImage(t, tc.batches, tc.trim)
			if tc.damage != nil {
				tc.damage(img, offs)
			}
			dev := device.NewMemFrom("damaged", img)
			tl := newTestLog()
			l, err := Open([]device.Device{dev}, testFS, Config{}, tl.entry)
			if tc.corrupt {
				if err == nil {
					l.Close()
					t.Fatal("Open succeeded on a corrupt log")
				}
				if !IsCorruption(err) {
					t.Fatalf("Open = %v, want a corruption error", err)
				}
				if !bytes.Equal(dev.Bytes(), img) {
					t.Fatal("Open changed a device it refused")
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v\n%s", err, tl.dump())
			}
			defer l.Close()
			got, _ := replayAll(t, l, tc.trim)
			if len(got)+int(tc.trim) != tc.want {
				t.Fatalf("replayed %d records after %d, want %d in all\n%s", len(got), tc.trim, tc.want, tl.dump())
			}
			for i, g := range got {
				lsn := tc.trim + LSN(i) + 1
				if g.lsn != lsn || !equalRecord(g.rec, fixedRecord(uint64(lsn))) {
					t.Fatalf("record %d (lsn %d) differs", i, g.lsn)
				}
			}
			if torn := tl.count(logrus.WarnLevel, "torn") > 0; torn != tc.torn {
				t.Errorf("torn tail reported %v, want %v\n%s", torn, tc.torn, tl.dump())
			}
			if n := tl.count(logrus.ErrorLevel, ""); n != 0 {
				t.Errorf("%d errors logged\n%s", n, tl.dump())
			}
		})
	}
}

// TestTruncatedTailIsOverwritten checks that records an earlier run left
// behind a torn tail never come back, even where a new record lands exactly
// where an old one began.
func TestTruncatedTailIsOverwritten(t *testing.T) {
	img, offs := crashImage(t, []bool{true, false, false}, 0)
	clear(img[offs[8]+200 : offs[8]+712]) // records 9..15 survive behind the tear
	dev := device.NewMemFrom("dev", img)
	l := mustOpen(t, []device.Device{dev}, Config{}, nil)
	if got, _ := replayAll(t, l, 0); len(got) != 7 {
		t.Fatalf("replayed %d, want 7", len(got))
	}
	// Same sizes as the old records: every new record starts where an old
	// one did, with the same LSN.
	for i := uint64(8); i <= 9; i++ {
		r := fixedRecord(i)
		r.Obj = 999
		appendRec(t, l, r)
	}
	if err := l.Sync(context.Background(), 9); err != nil {
		t.Fatal(err)
	}
	img2 := dev.Bytes() // crash: no clean close
	l.Close()
	l = mustOpen(t, []device.Device{device.NewMemFrom("dev", img2)}, Config{}, nil)
	defer l.Close()
	got, last := replayAll(t, l, 0)
	if len(got) != 9 || last != 9 {
		t.Fatalf("replayed %d, last %d; want 9: old records 10..15 must stay dead", len(got), last)
	}
	for _, g := range got[7:] {
		if g.rec.Obj != 999 {
			t.Fatalf("lsn %d is the old record", g.lsn)
		}
	}
}
