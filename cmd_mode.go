package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dcache/dcache/cachelayer"
)

func modeCmd() *cobra.Command {
	var flush bool
	var dirName *string
	cmd := &cobra.Command{
		Use:   "mode MOUNTPOINT MODE",
		Short: "Change the cache mode of a live mount: write-back, write-through or write-around",
		Long: `Change the cache mode of a live mount: write-back, write-through or
write-around. Writes in flight finish in the mode they started in; every
mode logs first, so nothing is lost by switching. With --flush, everything
dirty is then destaged, so that after switching away from write-back no data
is held only by the cache and the log.

The command writes the mode's name to MOUNTPOINT/.dcache/mode and, with
--flush, "all" to MOUNTPOINT/.dcache/flush; a shell can do the same.
--dir-name names the directory when stats.dir_name is not .dcache.`,
		Args: exactArgs(2, "MOUNTPOINT and MODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, err := dcacheMount(args[0])
			if err != nil {
				return err
			}
			ctl, err := ctlDir(mnt, *dirName)
			if err != nil {
				return err
			}
			if err := setMode(ctl, args[1], flush); err != nil {
				return err
			}
			fmt.Printf("dcache: %s is now %s\n", mnt, args[1])
			return nil
		},
	}
	cmd.Flags().BoolVar(&flush, "flush", false, "destage everything dirty after switching")
	dirName = statsDirFlag(cmd)
	return cmd
}

// dcacheMount checks that dir is the root of a dcache mount and returns its
// absolute path.
func dcacheMount(dir string) (string, error) {
	mnt, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	m, ok, err := findMount(mnt)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", &usageError{fmt.Sprintf("%s is not mounted", mnt)}
	}
	if m.fstype != "fuse.dcache" {
		return "", &usageError{fmt.Sprintf("%s is not a dcache mount (%s)", mnt, m.fstype)}
	}
	return mnt, nil
}

// setMode asks the daemon behind control directory ctl to switch to mode:
// the mode file first, so that with flush the destage that follows leaves
// nothing dirty that was written before the switch.
func setMode(ctl, mode string, flush bool) error {
	if _, err := cachelayer.ParseMode(mode); err != nil {
		return &usageError{fmt.Sprintf("mode: %q is not one of write-back, write-through, write-around", mode)}
	}
	if err := writeControl(ctl, "mode", mode); err != nil {
		return err
	}
	if flush {
		if err := writeControl(ctl, "flush", "all"); err != nil {
			return fmt.Errorf("the mode is %s, but the flush failed (dirty data stays in the log and is retried): %w", mode, err)
		}
	}
	return nil
}

// writeControl writes value to control file name under ctl. The daemon
// acts on the write and reports failure as the write's error.
func writeControl(ctl, name, value string) error {
	path := filepath.Join(ctl, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s does not exist: this daemon has no %s control file", path, name)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
