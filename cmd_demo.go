package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/dcache/dcache/config"
)

func demoCmd() *cobra.Command {
	var keep, verbose bool
	var files int
	var big config.Size = 256 << 20
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Mount a demo filesystem, write and read through it, remount and verify",
		Long: `Mount dcache on a temporary directory with the embedded default
configuration (backend and log under a temporary data directory), write a
tree of small files and one large file, show what the cache, the log and the
backend hold, unmount cleanly, mount again, verify every file's SHA-256 and
print a short report. Exits 0 when everything matched.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return demo(cmd, keep, verbose, files, int64(big))
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show the daemon's log lines too")
	cmd.Flags().IntVar(&files, "files", 2000, "number of small files")
	cmd.Flags().Var(&sizeFlag{&big}, "big", "size of the large file")
	addConfigFlags(cmd.Flags())
	return cmd
}

// sizeFlag reads a size with units (256MiB) from the command line.
type sizeFlag struct{ s *config.Size }

func (f *sizeFlag) String() string { return f.s.String() }
func (f *sizeFlag) Type() string   { return "size" }
func (f *sizeFlag) Set(v string) error {
	s, err := config.ParseSize(v)
	if err != nil {
		return err
	}
	*f.s = s
	return nil
}

func demo(cmd *cobra.Command, keep, verbose bool, nfiles int, big int64) error {
	tmp, err := os.MkdirTemp("", "dcache-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(tmp)
	}
	if !cmd.Flags().Changed("data-dir") && os.Getenv("DCACHE_DATA_DIR") == "" {
		if err := cmd.Flags().Set("data-dir", filepath.Join(tmp, "data")); err != nil {
			return err
		}
	}
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	mnt := filepath.Join(tmp, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	logger, err := newLogger(cfg, os.Stderr)
	if err != nil {
		return err
	}
	if !verbose {
		// The demo's own lines are the report; the daemon's lifecycle
		// lines are for a real mount (or --verbose).
		logger.SetLevel(logrus.WarnLevel)
	}
	say := func(format string, a ...any) { fmt.Printf("demo: "+format+"\n", a...) }
	say("data dir %s, mount point %s", cfg.DataDir, mnt)

	s, err := openStack(cfg, logger, mnt)
	if err != nil {
		return err
	}
	mounted := true
	defer func() {
		if mounted {
			s.unmount()
			s.teardown()
		}
	}()

	// 1. A tree of small files and one large file, with checksums.
	sums := map[string][32]byte{}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	start := time.Now()
	var small int64
	for i := 0; i < nfiles; i++ {
		p := filepath.Join(mnt, "tree", fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%05d", i))
		if i < 20 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		b := make([]byte, rng.Intn(64<<10))
		rng.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		sums[p] = sha256.Sum256(b)
		small += int64(len(b))
	}
	el := time.Since(start)
	say("wrote %d small files (%s) in %v: %.0f files/s", nfiles, human(small), el.Round(time.Millisecond), float64(nfiles)/el.Seconds())

	bigPath := filepath.Join(mnt, "big.bin")
	start = time.Now()
	sum, err := writeBig(bigPath, big, rng)
	if err != nil {
		return err
	}
	sums[bigPath] = sum
	el = time.Since(start)
	say("wrote %s in one file (with fsync) in %v: %.0f MiB/s", human(big), el.Round(time.Millisecond), float64(big)/(1<<20)/el.Seconds())

	showState(s, say)
	start = time.Now()
	if err := s.eng.Flush(cmd.Context()); err != nil {
		return err
	}
	say("destaged everything in %v", time.Since(start).Round(time.Millisecond))
	showState(s, say)

	// 2. Clean unmount, then mount again: the backend alone holds it all.
	s.state("draining")
	s.unmount()
	if err := s.teardown(); err != nil {
		return err
	}
	mounted = false
	say("unmounted cleanly")
	if s, err = openStack(cfg, logger, mnt); err != nil {
		return err
	}
	mounted = true
	say("mounted again")
	start = time.Now()
	var read int64
	for p, want := range sums {
		got, n, err := sumFile(p)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("demo: %s: checksum differs after remount", p)
		}
		read += n
	}
	el = time.Since(start)
	say("verified %d files (%s) after remount in %v: %.0f MiB/s from the backend", len(sums), human(read), el.Round(time.Millisecond), float64(read)/(1<<20)/el.Seconds())
	showState(s, say)
	s.unmount()
	if err := s.teardown(); err != nil {
		return err
	}
	mounted = false
	say("OK: every checksum matched after a clean unmount and remount")
	return nil
}

func writeBig(path string, size int64, rng *rand.Rand) ([32]byte, error) {
	f, err := os.Create(path)
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		rng.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return [32]byte{}, err
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return [32]byte{}, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, f.Close()
}

func sumFile(path string) ([32]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return [32]byte{}, 0, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, nil
}

// showState prints what the cache, the log and the backend hold.
func showState(s *stack, say func(string, ...any)) {
	ci := s.eng.Info()
	say("cache: %s used of %s (%s dirty, %s clean), %d objects",
		human(ci.DirtyBytes+ci.CleanBytes), human(ci.PoolBytes), human(ci.DirtyBytes), human(ci.CleanBytes), ci.Objects)
	ls := s.wal.Stats()
	for _, r := range ls.Replicas {
		say("log replica %s: %s in use of %s (%v)", r.Name, human(r.UsedBytes), human(r.UsedBytes+r.FreeBytes), r.Health)
	}
	var segBytes int64
	segs := s.be.Segments()
	for _, sg := range segs {
		segBytes += sg.Size
	}
	say("backend: %d segments, %s", len(segs), human(segBytes))
}

// human prints a byte count for people: 1.5 GiB, 12.0 MiB, 512 B.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}
