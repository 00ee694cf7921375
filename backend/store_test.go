package backend

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestOpenCreateReopen(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) // dir does not exist yet
		cfg     Config
		wantSeg int64
	}{
		{"missing dir", func(*testing.T, string) {}, Config{}, DefaultSegmentSize},
		{"missing parents", nil, Config{SegmentSize: 2 << 20}, 2 << 20},
		{"empty dir", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}, Config{SegmentSize: MinSegmentSize}, MinSegmentSize},
		{"interrupted creation", func(t *testing.T, dir string) {
			for _, sub := range []string{segmentsDir, metaDir} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range []string{lockName, superblockTmp} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}, Config{}, DefaultSegmentSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "b")
			if tt.prepare == nil {
				dir = filepath.Join(dir, "x", "y")
			} else {
				tt.prepare(t, dir)
			}
			s, created, err := Open(OSFS{}, dir, tt.cfg, testLog(t))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !created {
				t.Errorf("created = false for a fresh backend")
			}
			id := s.ID()
			if id == [16]byte{} {
				t.Errorf("zero uuid")
			}
			if got := s.SegmentSize(); got != tt.wantSeg {
				t.Errorf("SegmentSize = %d, want %d", got, tt.wantSeg)
			}
			if _, err := os.Stat(filepath.Join(dir, superblockTmp)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("superblock.tmp left behind: %v", err)
			}
			pid, err := os.ReadFile(filepath.Join(dir, lockName))
			if err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
				t.Errorf("lock file holds %q (%v), want our pid %d", pid, err, os.Getpid())
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			// Reopen with a different configured segment size: the superblock wins.
			s2, created, err := Open(OSFS{}, dir, Config{SegmentSize: 8 << 20}, testLog(t))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer s2.Close()
			if created {
				t.Errorf("created = true on reopen")
			}
			if s2.ID() != id {
				t.Errorf("uuid changed on reopen: %x -> %x", id, s2.ID())
			}
			if got := s2.SegmentSize(); got != tt.wantSeg {
				t.Errorf("SegmentSize after reopen = %d, want %d", got, tt.wantSeg)
			}
		})
	}
}

func TestConfigRejected(t *testing.T) {
	tests := []struct {
		cfg  Config
		want []string // fragments of the message
	}{
		{Config{SegmentSize: 1<<20 + 1}, []string{"segment size", "1048577"}},
		{Config{SegmentSize: 512 << 10}, []string{"segment size"}},
		{Config{SegmentSize: 8 << 30}, []string{"segment size"}},
		{Config{SegmentSize: -4096}, []string{"segment size"}},
		{Config{WriteBuffer: 4096}, []string{"write buffer"}},
		{Config{WriteBuffer: 1<<20 + 100}, []string{"write buffer"}},
		{Config{SegmentSize: 3, WriteBuffer: 3}, []string{"segment size", "write buffer"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.cfg), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			_, _, err := Open(OSFS{}, dir, tt.cfg, nil)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("Open = %v, want ErrConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("rejected config created %s", dir)
			}
		})
	}
}

// newBackend creates a backend in a temp dir, writes a record and closes it.
func newBackend(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s := mustOpen(t, OSFS{}, dir, Config{SegmentSize: MinSegmentSize})
	mustAppend(t, s, []byte("hello"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rewriteSuperblock changes the superblock file with edit.
func rewriteSuperblock(t *testing.T, dir string, edit func(b []byte) []byte) {
	t.Helper()
	p := filepath.Join(dir, superblockName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesAndChangesNothing(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T) string // returns the dir to open
		check   func(err error) bool
		want    []string
	}{
		{"foreign files", func(t *testing.T) string {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
			os.Mkdir(filepath.Join(dir, "photos"), 0o755)
			return dir
		}, func(err error) bool { return errors.Is(err, ErrNotBackend) }, []string{"not a dcache backend"}},
		{"only a meta dir with files", func(t *testing.T) string {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, metaDir), 0o755)
			os.WriteFile(filepath.Join(dir, metaDir, "checkpoint-0000000000000001"), []byte("x"), 0o644)
			return dir
		}, func(err error) bool { return errors.Is(err, ErrNotBackend) }, nil},
		{"a regular file", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "file")
			os.WriteFile(p, []byte("data"), 0o644)
			return p
		}, func(err error) bool { return errors.Is(err, ErrNotBackend) }, []string{"not a directory"}},
		{"newer version", func(t *testing.T) string {
			dir := newBackend(t)
			rewriteSuperblock(t, dir, func(b []byte) []byte {
				le.PutUint32(b[8:], FormatVersion+1)
				le.PutUint32(b[60:], crc(b[:60]))
				return b
			})
			return dir
		}, func(err error) bool { return errors.Is(err, ErrVersion) }, []string{"version 2", "version 1"}},
		{"newer version, longer superblock", func(t *testing.T) string {
			dir := newBackend(t)
			rewriteSuperblock(t, dir, func(b []byte) []byte {
				le.PutUint32(b[8:], 7)
				return append(b, make([]byte, 100)...)
			})
			return dir
		}, func(err error) bool { return errors.Is(err, ErrVersion) }, []string{"version 7"}},
		{"flipped superblock byte", func(t *testing.T) string {
			dir := newBackend(t)
			flipByte(t, filepath.Join(dir, superblockName), 20)
			return dir
		}, IsCorruption, []string{"crc"}},
		{"bad superblock magic", func(t *testing.T) string {
			dir := newBackend(t)
			flipByte(t, filepath.Join(dir, superblockName), 0)
			return dir
		}, IsCorruption, []string{"magic"}},
		{"truncated superblock", func(t *testing.T) string {
			dir := newBackend(t)
			rewriteSuperblock(t, dir, func(b []byte) []byte { return b[:40] })
			return dir
		}, IsCorruption, []string{"length"}},
		{"missing segments dir", func(t *testing.T) string {
			dir := newBackend(t)
			os.RemoveAll(filepath.Join(dir, segmentsDir))
			return dir
		}, IsCorruption, []string{"segments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := tt.prepare(t)
			before := dirState(t, filepath.Dir(dir))
			s, _, err := Open(OSFS{}, dir, Config{}, testLog(t))
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded")
			}
			if !tt.check(err) {
				t.Fatalf("Open = %v: wrong kind of error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			sameState(t, before, dirState(t, filepath.Dir(dir)))
		})
	}
}

func TestOpenInUseSameProcess(t *testing.T) {
	dir := t.TempDir()
	mustOpen(t, OSFS{}, dir, Config{})
	before := dirState(t, dir)
	_, _, err := Open(OSFS{}, dir, Config{}, testLog(t))
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open = %v, want ErrInUse", err)
	}
	if want := "pid " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
	sameState(t, before, dirState(t, dir))
}

const lockHelperEnv = "DCACHE_BACKEND_TEST_LOCK_DIR"

// TestLockHelperProcess is not a test: TestOpenInUseOtherProcess runs the
// test binary with it to hold a backend open in another process.
func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	s, _, err := Open(OSFS{}, dir, Config{}, nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	s.Close()
	os.Exit(0)
}

func TestOpenInUseOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}

	before := dirState(t, dir)
	_, _, err = Open(OSFS{}, dir, Config{}, testLog(t))
	if !errors.Is(err, ErrInUse) {
		t.Errorf("Open while another process holds it = %v, want ErrInUse", err)
	} else if want := "pid " + strconv.Itoa(cmd.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %q", err, want)
	}
	sameState(t, before, dirState(t, dir))

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	// Released by the other process's Close: this one can open it now.
	if s := mustOpen(t, OSFS{}, dir, Config{}); s.ID() == [16]byte{} {
		t.Errorf("zero uuid")
	}
}

func TestStatFS(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{})
	total, free, avail, err := s.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 || free > total || avail > free {
		t.Errorf("StatFS = total %d free %d avail %d", total, free, avail)
	}
}

func TestClosedStore(t *testing.T) {
	s := mustOpen(t, OSFS{}, t.TempDir(), Config{})
	a := mustAppend(t, s, []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]byte("y")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v", err)
	}
	if err := s.Read(a, make([]byte, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if _, err := s.CreateMeta(MetaDelta, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("CreateMeta after Close = %v", err)
	}
	if _, _, err := s.LoadMeta(); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadMeta after Close = %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
}
