// Command dcache mounts a write-back cache filesystem: writes land in DRAM
// and in a replicated log on fast devices, and are destaged in large
// segments to a backend directory.
//
//	dcache mount [--config FILE] [-d] MOUNTPOINT
//	dcache umount MOUNTPOINT
//	dcache format [--config FILE] --yes
//	dcache demo
//	dcache version
package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dcache/dcache/config"
)

// defaultConfig is the documented default configuration: config.yaml is the
// embedded default, so the file and the behaviour cannot drift apart.
//
//go:embed config.yaml
var defaultConfig []byte

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit codes.
const (
	exitFailure = 1 // the operation failed
	exitUsage   = 2 // bad configuration or arguments
)

func main() {
	root := &cobra.Command{
		Use:           "dcache",
		Short:         "A write-back cache filesystem with a replicated log",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// A bad flag (an unknown one such as --cache.sise, or a bad value of a
	// non-config flag) is a usage error like a bad config key: exit 2.
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{fmt.Sprintf("%s: %v (see %s --help)", cmd.Name(), err, cmd.CommandPath())}
	})
	root.AddCommand(mountCmd(), umountCmd(), formatCmd(), modeCmd(), demoCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "dcache: %v\n", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is the process exit code for an error a command returned.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if config.IsValidation(err) || isUsage(err) {
		return exitUsage
	}
	return exitFailure
}

// isUsage reports cobra's own argument errors.
func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &usageError{fmt.Sprintf("%s: expected %s (see %s --help)", cmd.Name(), what, cmd.CommandPath())}
		}
		return nil
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  exactArgs(0, "no arguments"),
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Printf("dcache %s\n", version)
		},
	}
}
