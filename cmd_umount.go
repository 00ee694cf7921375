package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

func umountCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount cleanly: destage everything, leave the log empty, stop the daemon",
		Args:  exactArgs(1, "MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return umount(args[0])
		},
	}
}

// umount finds the daemon serving mnt (the mount's source is its data dir,
// whose lock file holds the pid), asks it to stop with SIGTERM and waits
// until it has destaged and exited. A mount without a daemon (it was
// killed) is detached.
func umount(dir string) error {
	mnt, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	m, ok, err := findMount(mnt)
	if err != nil {
		return err
	}
	if !ok {
		return &usageError{fmt.Sprintf("%s is not mounted", mnt)}
	}
	if m.fstype != "fuse.dcache" {
		return &usageError{fmt.Sprintf("%s is not a dcache mount (%s)", mnt, m.fstype)}
	}
	pid, lockedMnt := readLock(m.source)
	if pid <= 0 || lockedMnt != mnt || syscall.Kill(pid, 0) != nil {
		if err := detachStale(mnt); err != nil {
			return fmt.Errorf("detach stale mount %s: %w", mnt, err)
		}
		fmt.Printf("dcache: %s had no running daemon; detached the stale mount\n", mnt)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal daemon %d: %w", pid, err)
	}
	start := time.Now()
	said := false
	for processAlive(pid) {
		if !said && time.Since(start) > 2*time.Second {
			fmt.Printf("dcache: waiting for pid %d to destage and stop...\n", pid)
			said = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("dcache: unmounted %s\n", mnt)
	return nil
}

// processAlive reports whether pid runs: it exists, is not a zombie, and
// is not dying with SIGKILL pending. A killed process whose last thread is
// stuck in the kernel (waiting on a request to its own hung FUSE mount)
// keeps its state D, not Z, until that request is aborted, but never runs
// again.
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, _ := strings.Cut(line, ":")
		val = strings.TrimSpace(val)
		switch key {
		case "State":
			if strings.HasPrefix(val, "Z") || strings.HasPrefix(val, "X") {
				return false
			}
		case "SigPnd", "ShdPnd":
			mask, err := strconv.ParseUint(val, 16, 64)
			if err == nil && mask&(1<<(syscall.SIGKILL-1)) != 0 {
				return false
			}
		}
	}
	return true
}
