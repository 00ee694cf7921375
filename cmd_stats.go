package main

// The inspection commands: dcache stats, inflight, object and flush. They
// talk to a running mount only through the files of its statistics
// directory (.dcache), so they work from any directory and need no socket.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dcache/dcache/fs"
)

// statsDirFlag adds --dir-name: the mount's stats.dir_name.
func statsDirFlag(cmd *cobra.Command) *string {
	def := os.Getenv("DCACHE_STATS_DIR_NAME")
	if def == "" {
		def = ".dcache"
	}
	return cmd.Flags().String("dir-name", def, "the mount's statistics directory (stats.dir_name; $DCACHE_STATS_DIR_NAME)")
}

// ctlDir returns the statistics directory of the mount at mnt.
func ctlDir(mnt, name string) (string, error) {
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(abs, name)
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return "", &usageError{fmt.Sprintf("%s has no %s directory: not a dcache mount, or its stats.dir_name differs (see --dir-name)", abs, name)}
	}
	return dir, nil
}

// readReport reads and decodes stats.json.
func readReport(dir string) (*fs.Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "stats.json"))
	if err != nil {
		return nil, err
	}
	var r fs.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s/stats.json: %w", dir, err)
	}
	return &r, nil
}

func statsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats MOUNTPOINT",
		Short: "Show a mount's statistics (operations, cache, destage, log, backend)",
		Args:  exactArgs(1, "MOUNTPOINT"),
	}
	asJSON := cmd.Flags().Bool("json", false, "print stats.json as it is")
	watch := cmd.Flags().Duration("watch", 0, "redraw every interval (e.g. 1s) until interrupted")
	dirName := statsDirFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dir, err := ctlDir(args[0], *dirName)
		if err != nil {
			return err
		}
		if *watch < 0 {
			return &usageError{"stats: --watch must not be negative"}
		}
		show := func(w io.Writer) error {
			if *asJSON {
				b, err := os.ReadFile(filepath.Join(dir, "stats.json"))
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			}
			r, err := readReport(dir)
			if err != nil {
				return err
			}
			_, err = w.Write(r.Text())
			return err
		}
		if *watch == 0 {
			return show(os.Stdout)
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sig)
		t := time.NewTicker(*watch)
		defer t.Stop()
		for {
			var b strings.Builder
			if !*asJSON {
				b.WriteString("\033[H\033[2J") // home, clear
			}
			if err := show(&b); err != nil {
				return err
			}
			fmt.Print(b.String())
			select {
			case <-sig:
				return nil
			case <-t.C:
			}
		}
	}
	return cmd
}

func inflightCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inflight MOUNTPOINT",
		Short: "List requests older than stats.hung_threshold and the stage they wait in",
		Args:  exactArgs(1, "MOUNTPOINT"),
	}
	dirName := statsDirFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dir, err := ctlDir(args[0], *dirName)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(dir, "inflight"))
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	return cmd
}

// inodeUnder returns the inode number of path, which must be on the mount
// at mnt.
func inodeUnder(mnt, path string) (uint64, error) {
	var ms, ps syscall.Stat_t
	if err := syscall.Stat(mnt, &ms); err != nil {
		return 0, fmt.Errorf("%s: %w", mnt, err)
	}
	if err := syscall.Lstat(path, &ps); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if ms.Dev != ps.Dev {
		return 0, &usageError{fmt.Sprintf("%s is not on the mount %s", path, mnt)}
	}
	return ps.Ino, nil
}

func objectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "object MOUNTPOINT PATH",
		Short: "Show one object's state: size, dirty and clean bytes, extents, log LSNs",
		Args:  exactArgs(2, "MOUNTPOINT and PATH"),
	}
	dirName := statsDirFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dir, err := ctlDir(args[0], *dirName)
		if err != nil {
			return err
		}
		ino, err := inodeUnder(args[0], args[1])
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(dir, "objects", fmt.Sprint(ino)))
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	return cmd
}

func flushCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flush MOUNTPOINT [PATH]",
		Short: "Destage every dirty byte (or those of PATH's file or tree) and wait until the backend holds them",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return &usageError{fmt.Sprintf("flush: expected MOUNTPOINT [PATH] (see %s --help)", cmd.CommandPath())}
			}
			return nil
		},
	}
	quiet := cmd.Flags().BoolP("quiet", "q", false, "no progress bar")
	dirName := statsDirFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dir, err := ctlDir(args[0], *dirName)
		if err != nil {
			return err
		}
		what := "all"
		var objDirty int64 = -1
		if len(args) == 2 {
			mnt, _ := filepath.Abs(args[0])
			p, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			ino, err := inodeUnder(mnt, p)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(mnt, p)
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return &usageError{fmt.Sprintf("%s is not under %s", p, mnt)}
			}
			what = rel
			if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() {
				objDirty = objectDirty(dir, ino)
			}
		}
		return flush(dir, what, objDirty, *quiet)
	}
	return cmd
}

// objectDirty reads an object's dirty bytes from objects/INO (-1 if not known).
func objectDirty(dir string, ino uint64) int64 {
	b, err := os.ReadFile(filepath.Join(dir, "objects", fmt.Sprint(ino)))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "dirty_bytes: "); ok {
			var n int64
			if _, err := fmt.Sscan(v, &n); err == nil {
				return n
			}
		}
	}
	return -1
}

// flush writes what to the flush control file, which returns once the
// data is in the backend, and meanwhile shows the destage's progress.
func flush(dir, what string, total int64, quiet bool) error {
	start, err := readReport(dir)
	if err != nil {
		return err
	}
	if total < 0 {
		total = start.Cache.DirtyBytes
	}
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(filepath.Join(dir, "flush"), os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		_, err = f.Write([]byte(what + "\n"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	var bar *progressbar.ProgressBar
	if !quiet {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription("destaging "+what),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
		)
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				if bar != nil {
					_ = bar.Exit()
					fmt.Fprintln(os.Stderr)
				}
				var pe *os.PathError
				if errors.As(err, &pe) {
					err = fmt.Errorf("flush %s: %w", what, pe.Err)
				}
				return err
			}
			if bar != nil {
				_ = bar.Finish()
			}
			r, err := readReport(dir)
			if err == nil && what == "all" {
				fmt.Printf("flushed: %s dirty left, %s destaged\n", fs.Bytes(r.Cache.DirtyBytes), fs.Bytes(r.Destage.BytesTotal-start.Destage.BytesTotal))
			} else {
				fmt.Printf("flushed %s\n", what)
			}
			return nil
		case <-t.C:
			if bar == nil {
				continue
			}
			r, err := readReport(dir)
			if err != nil {
				continue
			}
			moved := r.Destage.BytesTotal - start.Destage.BytesTotal + r.Destage.InProgressDoneBytes
			if all := moved + r.Cache.DirtyBytes; what == "all" && all > total {
				// The flush first took dirty pages the kernel still held
				// (fuse.kernel_dirty): there is more to destage than the
				// engine had when the flush began.
				total = all
				bar.ChangeMax64(total)
			}
			_ = bar.Set64(min(max(moved, 0), total))
		}
	}
}
