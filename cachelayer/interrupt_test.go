package cachelayer

import (
	"context"
	"syscall"
	"testing"

	"github.com/dcache/dcache/backend"
)

// interruptibleWAL is a memWAL whose Sync gives up when the caller's
// context is canceled, as logarea's does: the FUSE layer cancels a
// request's context when the kernel interrupts it (a signal reached the
// calling process).
type interruptibleWAL struct{ *memWAL }

func (w interruptibleWAL) Sync(ctx context.Context, lsn uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.memWAL.Sync(ctx, lsn)
}

// TestInterruptedOpReportsWhatHappened: an op whose request is interrupted
// either fails and changes nothing, or takes effect and returns success,
// durable as its sync mode promises. It must never take effect and report
// failure: the caller (a Go program, or C under SA_RESTART rules) retries
// an interrupted call, and a create then fails with EEXIST, a rename or an
// unlink with ENOENT, for an op that happened.
func TestInterruptedOpReportsWhatHappened(t *testing.T) {
	tests := []struct {
		name string
		sync SyncMode
		// op runs with ctx; done reports whether it took effect.
		op   func(e *Engine, ctx context.Context, f Ino) error
		done func(e *Engine, f Ino) bool
	}{
		{"create, sync always", SyncAlways,
			func(e *Engine, ctx context.Context, _ Ino) error {
				_, err := e.Create(ctx, RootIno, "new", NewObject{Mode: syscall.S_IFREG | 0o644}, root())
				return err
			},
			func(e *Engine, _ Ino) bool { _, err := e.Lookup(RootIno, "new"); return err == nil }},
		{"mkdir, sync always", SyncAlways,
			func(e *Engine, ctx context.Context, _ Ino) error {
				_, err := e.Create(ctx, RootIno, "dir", NewObject{Mode: syscall.S_IFDIR | 0o755}, root())
				return err
			},
			func(e *Engine, _ Ino) bool { _, err := e.Lookup(RootIno, "dir"); return err == nil }},
		{"rename, sync always", SyncAlways,
			func(e *Engine, ctx context.Context, _ Ino) error { return e.Rename(ctx, RootIno, "f", RootIno, "g", 0) },
			func(e *Engine, _ Ino) bool { _, err := e.Lookup(RootIno, "g"); return err == nil }},
		{"unlink, sync always", SyncAlways,
			func(e *Engine, ctx context.Context, _ Ino) error { return e.Unlink(ctx, RootIno, "f") },
			func(e *Engine, _ Ino) bool { _, err := e.Lookup(RootIno, "f"); return err != nil }},
		{"write, sync always", SyncAlways,
			func(e *Engine, ctx context.Context, f Ino) error {
				_, err := e.Write(ctx, f, 0, []byte("data"), WriteOpts{})
				return err
			},
			func(e *Engine, f Ino) bool { in, _ := e.GetAttr(f); return in.Size == 4 }},
		{"O_SYNC write", SyncOnFsync,
			func(e *Engine, ctx context.Context, f Ino) error {
				_, err := e.Write(ctx, f, 0, []byte("data"), WriteOpts{Sync: true})
				return err
			},
			func(e *Engine, f Ino) bool { in, _ := e.GetAttr(f); return in.Size == 4 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wal := interruptibleWAL{&memWAL{}}
			be, _, err := backend.Open(backend.OSFS{}, t.TempDir()+"/backend", backend.Config{SegmentSize: 4 << 20}, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			e, err := Open(Config{CacheSize: 4 << 20, Sync: tc.sync}, be, wal, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				e.Close()
				be.Close()
			})
			f := mustCreate(t, e, RootIno, "f", syscall.S_IFREG|0o644)
			if err := e.Sync(bg); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithCancel(bg)
			cancel() // the kernel interrupted the request
			err = tc.op(e, ctx, f.Ino)
			done := tc.done(e, f.Ino)
			switch {
			case done && err != nil:
				t.Fatalf("the op took effect but returned %v", err)
			case !done && err == nil:
				t.Fatalf("the op returned success but did not take effect")
			case done:
				if last := wal.LastLSN(); wal.synced < last {
					t.Errorf("the op returned before its record was durable: synced %d, last %d", wal.synced, last)
				}
			}
		})
	}
}
