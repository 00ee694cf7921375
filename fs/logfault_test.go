package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dcache/dcache/cachelayer"
	"github.com/dcache/dcache/internal/device"
)

// TestToStatusLog checks that a log failure is EIO, whatever errno the log
// device reported.
func TestToStatusLog(t *testing.T) {
	f := &FS{log: testLogger(t)}
	for _, inner := range []error{syscall.EIO, syscall.ENOSPC, device.ErrVanished} {
		err := fmt.Errorf("%w: logarea: write quorum lost: %w", cachelayer.ErrLog, inner)
		if got := f.toStatus("write", err); got != fuse.EIO {
			t.Errorf("log failure over %v: status %v, want EIO", inner, got)
		}
	}
}

// TestLogEIOReachesApplication fails the log device under a mount: the
// application's fsync (and later writes and creates) get EIO, reads keep
// working, and after a restart on the healthy device the data fsynced
// before the failure is there.
func TestLogEIOReachesApplication(t *testing.T) {
	tm := newTestMount(t, testConfig())
	sw := device.NewSwitch(device.OpWrite|device.OpSync, syscall.ENOSPC)
	tm.unmount()
	tm.logFaults = []device.Injector{sw}
	tm.mount()

	before := bytes.Repeat([]byte("synced "), 1000)
	if err := writeSynced(tm.path("before"), before); err != nil {
		t.Fatal(err)
	}
	sw.Set(true) // the device fails with ENOSPC: the application sees EIO
	err := writeSynced(tm.path("after"), []byte("lost"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("write+fsync on a failed log: %v, want EIO", err)
	}
	if err := os.WriteFile(tm.path("later"), []byte("x"), 0o644); !errors.Is(err, syscall.EIO) {
		t.Errorf("create on a failed log: %v, want EIO", err)
	}
	if got, err := os.ReadFile(tm.path("before")); err != nil || !bytes.Equal(got, before) {
		t.Errorf("read on a failed log: %v, %d bytes", err, len(got))
	}

	// Stop: the engine cannot destage through a failed log; then start on
	// the device without faults.
	tm.stopFailed()
	sw.Set(false)
	tm.logFaults = nil
	tm.mount()
	if got, err := os.ReadFile(tm.path("before")); err != nil || !bytes.Equal(got, before) {
		t.Fatalf("after the restart: %v, %d bytes", err, len(got))
	}
	if err := writeSynced(tm.path("again"), []byte("works")); err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
}

// writeSynced creates path with data and fsyncs it.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// stopFailed unmounts a filesystem whose log failed: the engine's final
// destage and the log's close fail, and what the log held stays for the
// next mount to replay.
func (tm *testMount) stopFailed() {
	tm.t.Helper()
	if err := tm.srv.Unmount(); err != nil {
		tm.t.Fatalf("unmount: %v", err)
	}
	tm.srv.Wait()
	tm.eng.Close() // fails where the final destage needs the log
	tm.wal.Close()
	tm.dev.Close()
	if err := tm.be.Close(); err != nil {
		tm.t.Errorf("backend close: %v", err)
	}
	tm.mounted = false
}
