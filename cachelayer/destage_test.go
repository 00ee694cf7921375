package cachelayer

import (
	"bytes"
	"syscall"
	"testing"
)

// A partial destage round leaves a page dirty; an op after the round's copy
// drops that page (here: the file is unlinked). The round's image must
// still be completed by replaying the write that dirtied the page, for a
// crash before the unlink is durable must bring the file back whole.
func TestPartialRoundKeepsReplayForDroppedPages(t *testing.T) {
	// 16 pages of dirty budget, low watermark 1 page: with two dirty pages
	// a round to the low watermark destages exactly the older one.
	r := newRig(t, Config{CacheSize: 1 << 20, DirtyBytes: 16 * BlockSize, HighWatermark: 0.99, LowWatermark: 1.0 / 16})
	e := r.e
	f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
	e.Unref(f.Ino, 1) // no kernel reference: the unlink deletes at once
	a := bytes.Repeat([]byte{'a'}, BlockSize)
	b := bytes.Repeat([]byte{'b'}, BlockSize)
	mustWrite(t, e, f.Ino, 0, a)         // older: destaged by the round
	mustWrite(t, e, f.Ino, BlockSize, b) // newer: left dirty
	e.afterCopy = func() {
		e.afterCopy = nil
		if err := e.Unlink(bg, RootIno, "f"); err != nil {
			t.Errorf("unlink: %v", err)
		}
	}
	if err := e.destage(bg, destageToLow, true); err != nil {
		t.Fatal(err)
	}
	if e.Stats().DestageBytes.Load() != BlockSize {
		t.Fatalf("the round destaged %d bytes, want one page", e.Stats().DestageBytes.Load())
	}
	r.crash() // the unlink was not synced
	r.start()
	g, err := r.e.Lookup(RootIno, "f")
	if err != nil {
		t.Fatalf("after the crash: %v", err)
	}
	if got := readAll(t, r.e, g.Ino); !bytes.Equal(got, append(a, b...)) {
		t.Fatalf("after the crash the file reads %q...", got[:16])
	}
}
