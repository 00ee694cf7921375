package backend

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

type rec struct {
	a    Addr
	data []byte
}

// TestAppendSyncFaults injects EIO and ENOSPC under Append and Sync and
// checks the contract: the error is the filesystem's, data synced before
// stays readable, addresses since the last Sync are void, the store keeps
// working, and the same data appended again is durable across a reopen.
func TestAppendSyncFaults(t *testing.T) {
	const recLen = 90_000 // 22 blocks: 11 records fill the 1 MiB buffer, 46 blocks left per 1 MiB segment
	tests := []struct {
		name    string
		ops     op
		after   int
		err     syscall.Errno
		partial bool
		// pending records appended after the durable ones; the fault is
		// armed before them, and sync says whether Sync follows.
		pending int
		sync    bool
	}{
		{"partial write ENOSPC in Append", opWrite, 0, syscall.ENOSPC, true, 12, false},
		{"write EIO in Sync", opWrite, 0, syscall.EIO, false, 3, true},
		{"partial write EIO in Sync", opWrite, 0, syscall.EIO, true, 3, true},
		{"fdatasync EIO", opSync, 0, syscall.EIO, false, 3, true},
		{"fdatasync EIO after rollover", opSync, 0, syscall.EIO, false, 30, true},
		{"second fdatasync EIO after rollover", opSync, 1, syscall.EIO, false, 30, true},
		{"segments fsync EIO after rollover", opSyncDir, 0, syscall.EIO, false, 30, true},
		{"segment create ENOSPC", opCreate, 0, syscall.ENOSPC, false, 30, false},
		{"write ENOSPC after rollover", opWrite, 1, syscall.ENOSPC, true, 60, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			efs := newErrFS()
			cfg := Config{SegmentSize: MinSegmentSize, WriteBuffer: MinWriteBuffer}
			s := mustOpen(t, efs, dir, cfg)

			// Durable records: a full segment and part of the next.
			var durable []rec
			for i := range 14 {
				p := payload(uint64(i), recLen)
				durable = append(durable, rec{mustAppend(t, s, p), p})
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			lastDurableSeg := durable[len(durable)-1].a.Segment

			efs.inj.arm(tt.ops, tt.after, tt.err, tt.partial)
			var pending []rec
			var failure error
			for i := range tt.pending {
				p := payload(1000+uint64(i), recLen)
				a, err := s.Append(p)
				if err != nil {
					failure = err
					break
				}
				pending = append(pending, rec{a, p})
			}
			if failure == nil && tt.sync {
				failure = s.Sync()
			}
			efs.inj.disarm()
			if failure == nil {
				t.Fatalf("no error surfaced (%d injected)", efs.inj.failures())
			}
			if !errors.Is(failure, tt.err) {
				t.Fatalf("error %v does not wrap %v", failure, tt.err)
			}

			for _, r := range durable {
				checkRead(t, s, r.a, r.data)
			}
			maxVoided := lastDurableSeg
			for _, r := range pending {
				if err := s.Read(r.a, make([]byte, r.a.Len)); !errors.Is(err, ErrVoided) {
					t.Errorf("Read of %v appended before the failure = %v, want ErrVoided", r.a, err)
				}
				maxVoided = max(maxVoided, r.a.Segment)
			}
			// Segments without durable data are gone.
			for _, si := range s.Segments() {
				if si.Number > lastDurableSeg {
					t.Errorf("segment %d with nothing durable still listed", si.Number)
				}
			}

			// The engine retries with the same data.
			var retried []rec
			for i := range len(pending) + 1 {
				p := payload(1000+uint64(i), recLen)
				a := mustAppend(t, s, p)
				if a.Segment <= maxVoided {
					t.Errorf("retried record in segment %d, which was written before the failure", a.Segment)
				}
				retried = append(retried, rec{a, p})
			}
			if err := s.Sync(); err != nil {
				t.Fatalf("Sync after the fault cleared: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = mustOpen(t, OSFS{}, dir, cfg)
			for _, r := range append(durable, retried...) {
				checkRead(t, s, r.a, r.data)
			}
		})
	}
}

func TestCloseSyncFailure(t *testing.T) {
	dir := t.TempDir()
	efs := newErrFS()
	s := mustOpen(t, efs, dir, Config{})
	keep := payload(1, 5000)
	a := mustAppend(t, s, keep)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, payload(2, 5000))
	efs.inj.arm(opSync, 0, syscall.EIO, false)
	if err := s.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Close = %v, want EIO", err)
	}
	efs.inj.disarm()
	s = mustOpen(t, OSFS{}, dir, Config{})
	checkRead(t, s, a, keep)
}

func TestReadIOError(t *testing.T) {
	efs := newErrFS()
	s := mustOpen(t, efs, t.TempDir(), Config{})
	p := payload(1, 10_000)
	a := mustAppend(t, s, p)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, efs, s.dir, Config{})
	efs.inj.arm(opRead, 0, syscall.EIO, false)
	err := s.Read(a, make([]byte, a.Len))
	if !errors.Is(err, syscall.EIO) || IsCorruption(err) {
		t.Errorf("Read with EIO = %v, want EIO and not corruption", err)
	}
	efs.inj.disarm()
	checkRead(t, s, a, p)
}

func TestMetaCommitFaults(t *testing.T) {
	tests := []struct {
		name string
		ops  op
		err  syscall.Errno
	}{
		{"write ENOSPC", opWrite, syscall.ENOSPC},
		{"fsync EIO", opSync, syscall.EIO},
		{"rename EIO", opRename, syscall.EIO},
		{"create ENOSPC", opCreate, syscall.ENOSPC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			efs := newErrFS()
			s := mustOpen(t, efs, dir, Config{})
			writeMeta(t, s, metaSpec{MetaCheckpoint, 1, 100})

			efs.inj.arm(tt.ops, 0, tt.err, true)
			var err error
			w, err := s.CreateMeta(MetaDelta, 2)
			if err == nil {
				w.Write(payload(5, 3<<20))
				err = w.Commit()
			}
			efs.inj.disarm()
			if !errors.Is(err, tt.err) {
				t.Fatalf("commit = %v, want %v", err, tt.err)
			}
			ents, _ := os.ReadDir(filepath.Join(dir, metaDir))
			if len(ents) != 1 {
				t.Errorf("after a failed commit meta/ holds %d entries, want only the checkpoint", len(ents))
			}
			if _, deltas, err := s.LoadMeta(); err != nil || len(deltas) != 0 {
				t.Errorf("LoadMeta after a failed commit = %d deltas, %v", len(deltas), err)
			}
			writeMeta(t, s, metaSpec{MetaDelta, 2, 3 << 20})
			if _, deltas, err := s.LoadMeta(); err != nil || len(deltas) != 1 {
				t.Fatalf("LoadMeta after retry = %d deltas, %v", len(deltas), err)
			}
		})
	}
}

// TestCreateInterrupted fails each step of creating a backend; the next
// Open, without faults, creates it.
func TestCreateInterrupted(t *testing.T) {
	for _, o := range []op{opMkdir, opSyncDir, opCreate, opWrite, opSync, opRename, opLock} {
		for after := range 3 {
			dir := filepath.Join(t.TempDir(), "b")
			efs := newErrFS()
			efs.inj.arm(o, after, syscall.EIO, true)
			s, _, err := Open(efs, dir, Config{}, testLog(t))
			efs.inj.disarm()
			if err == nil {
				s.Close()
				continue // the fault came too late to matter
			}
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("op %d after %d: Open = %v, want EIO", o, after, err)
			}
			// created may be false: a failed fsync of DIR after the rename
			// leaves a complete backend behind.
			s, _, err = Open(OSFS{}, dir, Config{}, testLog(t))
			if err != nil {
				t.Fatalf("op %d after %d: Open after the failure = %v", o, after, err)
			}
			s.Close()
		}
	}
}
