package fs

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dcache/dcache/cachelayer"
)

// TestPrefetchThroughMount reads a file whose data is only in the backend
// (written, then remounted) through the mount: sequentially, the engine
// reads ahead of the kernel's requests and they hit what it read; with
// random reads it reads nothing ahead.
func TestPrefetchThroughMount(t *testing.T) {
	const size = 16 << 20
	cfg := testConfig()
	cfg.Prefetch = cachelayer.PrefetchSequential
	cfg.PrefetchMaxWindow = 8 << 20
	tm := newTestMount(t, cfg)
	tm.mo.ReadAhead = 4 << 20
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	if err := os.WriteFile(tm.path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tm.remount()

	f, err := os.Open(tm.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("sequential read: %d bytes, %v", len(got), err)
	}
	st := tm.eng.Stats()
	t.Logf("sequential: prefetched %d bytes, %d hits, %d wasted, %d dropped; %d foreground record reads",
		st.PrefetchBytes.Load(), st.PrefetchHits.Load(), st.PrefetchWaste.Load(), st.PrefetchDropped.Load(), st.ReadMisses.Load())
	if st.PrefetchBytes.Load() == 0 || st.PrefetchHits.Load() == 0 {
		t.Errorf("a cold sequential read through the mount prefetched %d bytes with %d hits", st.PrefetchBytes.Load(), st.PrefetchHits.Load())
	}

	tm.remount()
	fd, err := unix.Open(tm.path("f"), unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	for range 200 {
		off := int64(rng.IntN(size/4096)) * 4096
		if n, err := unix.Pread(fd, buf, off); err != nil || n != 4096 || !bytes.Equal(buf, data[off:off+4096]) {
			t.Fatalf("random read at %d: %d %v", off, n, err)
		}
	}
	if pb := tm.eng.Stats().PrefetchBytes.Load(); pb != 0 {
		t.Errorf("random reads through the mount prefetched %d bytes", pb)
	}
}
