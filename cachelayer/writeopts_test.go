package cachelayer

import (
	"syscall"
	"testing"
)

// TestWriteTimes checks what a write does to mtime and ctime: stamped with
// the write's time, or left alone with KeepTimes (the kernel keeps them),
// the same when the write is replayed from the log after a crash.
func TestWriteTimes(t *testing.T) {
	old := MakeTime(1_000_000_000, 123)
	for _, tc := range []struct {
		name  string
		wo    WriteOpts
		crash bool
	}{
		{"stamp", WriteOpts{}, false},
		{"stamp-replayed", WriteOpts{}, true},
		{"keep", WriteOpts{KeepTimes: true}, false},
		{"keep-replayed", WriteOpts{KeepTimes: true}, true},
		{"keep-kill-suid", WriteOpts{KeepTimes: true, KillSuidGid: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Config{CacheSize: 4 << 20})
			f := mustCreate(t, r.e, RootIno, "f", syscall.S_IFREG|0o6755)
			if _, err := r.e.SetAttr(bg, f.Ino, SetAttr{Mtime: &old, Ctime: &old}); err != nil {
				t.Fatal(err)
			}
			before := now()
			if n, err := r.e.Write(bg, f.Ino, 10, []byte("data"), tc.wo); err != nil || n != 4 {
				t.Fatalf("write: %d, %v", n, err)
			}
			if tc.crash {
				if err := r.e.Sync(bg); err != nil {
					t.Fatal(err)
				}
				r.crash()
				r.start()
			}
			in, err := r.e.GetAttr(f.Ino)
			if err != nil {
				t.Fatal(err)
			}
			if in.Size != 14 {
				t.Errorf("size %d, want 14", in.Size)
			}
			if tc.wo.KeepTimes {
				if in.Mtime != old || in.Ctime != old {
					t.Errorf("mtime %v ctime %v, want both %v", in.Mtime, in.Ctime, old)
				}
			} else if in.Mtime.Std().Before(before.Std()) || in.Ctime != in.Mtime {
				t.Errorf("mtime %v ctime %v, want both the write's time (after %v)", in.Mtime, in.Ctime, before)
			}
			wantMode := uint32(syscall.S_IFREG | 0o6755)
			if tc.wo.KillSuidGid {
				wantMode = syscall.S_IFREG | 0o755
			}
			if in.Mode != wantMode {
				t.Errorf("mode %#o, want %#o", in.Mode, wantMode)
			}
		})
	}
}
