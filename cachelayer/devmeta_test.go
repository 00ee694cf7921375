package cachelayer

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
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
