package cachelayer

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// On a device backend the meta ring is small (4 MiB here) and deltas would
// fill it long before they outgrow the checkpoint's 16 MiB threshold: the
// engine must write full checkpoints when the backend reports the ring
// getting short, and everything must survive a restart.
func TestDeviceMetaRingForcesCheckpoints(t *testing.T) {
	const (
		files  = 200
		rounds = 60
	)
	dev := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(dev, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dev, 128<<20); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, cfg: Config{CacheSize: 32 << 20}, wal: &memWAL{}, segSize: 1 << 20, device: dev}
	r.start()
	t.Cleanup(func() {
		if r.e != nil {
			r.stop()
		}
	})
	if free, limited := r.be.MetaRoom(); !limited || free > 4<<20 || free < 4<<20-64<<10 {
		t.Fatalf("meta room %d limited=%v, want a 4 MiB ring", free, limited)
	}
	inos := make([]Ino, files)
	for i := range inos {
		inos[i] = mustCreate(t, r.e, RootIno, fmt.Sprint("f", i), syscall.S_IFREG|0o644).Ino
	}
	want := make([][]byte, files)
	for round := range rounds {
		for i, ino := range inos {
			p := bytes.Repeat([]byte{byte(round), byte(i)}, 2048)
			mustWrite(t, r.e, ino, uint64(round)*8192, p)
			want[i] = append(want[i], make([]byte, uint64(round)*8192-uint64(len(want[i])))...)
			want[i] = append(want[i], p...)
		}
		if err := r.e.Flush(bg); err != nil {
			t.Fatalf("round %d: flush: %v", round, err)
		}
	}
	cps, deltas := r.e.Stats().Checkpoints.Load(), r.e.Stats().Deltas.Load()
	if cps < 3 {
		t.Fatalf("%d checkpoints and %d deltas: the ring did not force checkpoints", cps, deltas)
	}
	r.restart()
	for i, ino := range inos {
		if got := readAll(t, r.e, ino); !bytes.Equal(got, want[i]) {
			t.Fatalf("file %d differs after restart", i)
		}
	}
}

// A delta too large for the ring's room (it must leave space to checkpoint
// everything afterwards) is refused by the backend, and the engine writes
// the round as a checkpoint instead.
func TestDeviceMetaRingDeltaFallsBackToCheckpoint(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(dev, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dev, 128<<20); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, cfg: Config{CacheSize: 64 << 20, MaxDirtyAge: time.Hour}, wal: &memWAL{}, segSize: 1 << 20, device: dev}
	r.start()
	t.Cleanup(func() {
		if r.e != nil {
			r.stop()
		}
	})
	if err := r.e.Flush(bg); err != nil {
		t.Fatal(err)
	}
	cps, deltas := r.e.Stats().Checkpoints.Load(), r.e.Stats().Deltas.Load()
	const files = 30000
	for i := range files {
		mustCreate(t, r.e, RootIno, fmt.Sprint("file-with-a-long-name-", i), syscall.S_IFREG|0o644)
	}
	if err := r.e.Flush(bg); err != nil {
		t.Fatalf("flush: %v", err)
	}
	cps2, deltas2 := r.e.Stats().Checkpoints.Load(), r.e.Stats().Deltas.Load()
	t.Logf("checkpoints %d -> %d, deltas %d -> %d, checkpoint of %d bytes", cps, cps2, deltas, deltas2, r.e.cpSize)
	if cps2 != cps+1 || deltas2 != deltas {
		t.Fatalf("checkpoints %d -> %d, deltas %d -> %d: want the round written as one checkpoint", cps, cps2, deltas, deltas2)
	}
	r.restart()
	for _, i := range []int{0, files / 2, files - 1} {
		if _, err := r.e.Lookup(RootIno, fmt.Sprint("file-with-a-long-name-", i)); err != nil {
			t.Fatalf("after restart: lookup %d: %v", i, err)
		}
	}
}
