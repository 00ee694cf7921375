package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dcache/dcache/backend"
	"github.com/dcache/dcache/config"
	"github.com/dcache/dcache/logarea"
)

func formatCmd() *cobra.Command {
	var yes, withBackend bool
	cmd := &cobra.Command{
		Use:   "format [--config FILE] [--backend] --yes",
		Short: "Initialize the log replicas for this backend, overwriting what they hold",
		Long: `Write fresh log superblocks on every configured replica for the
filesystem in the configured backend (creating the backend if it does not
exist). Whatever the replicas held is lost, including log records not yet
destaged; it is the only way to reuse a device that belongs to another
filesystem. The backend's data is kept.

With --backend (backend.type device only), the backend device is formatted
first: a new filesystem, empty, replacing whatever the device held. It is
the only way to use a device that holds other data or another dcache
filesystem.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return &usageError{"format overwrites the log replicas; add --yes to confirm"}
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if withBackend && cfg.Backend.Type != config.BackendDevice {
				return &usageError{"--backend formats a backend device (backend.type device); a directory backend is created when it is empty"}
			}
			return format(cfg, withBackend)
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm overwriting the log replicas")
	cmd.Flags().BoolVar(&withBackend, "backend", false, "also format the backend device, erasing it")
	addConfigFlags(cmd.Flags())
	return cmd
}

func format(cfg *config.Config, withBackend bool) error {
	logger, err := newLogger(cfg, os.Stderr)
	if err != nil {
		return err
	}
	lock, err := lockDataDir(cfg.DataDir, "(format)")
	if err != nil {
		return err
	}
	defer lock.Close()
	if withBackend {
		id, err := backend.FormatDeviceFile(cfg.Backend.Path, int64(cfg.Flush.SegmentSize))
		if err != nil {
			return fmt.Errorf("backend %s: %w", cfg.Backend.Path, err)
		}
		fmt.Printf("dcache: formatted backend device %s (filesystem %x)\n", cfg.Backend.Path, id)
	}
	be, _, err := openBackend(cfg, logger)
	if err != nil {
		return err
	}
	defer be.Close()
	devs, err := openLogDevices(cfg, true)
	if err != nil {
		return err
	}
	defer closeDevices(devs)
	if err := logarea.Format(devs, be.ID()); err != nil {
		return err
	}
	for _, d := range devs {
		fmt.Printf("dcache: formatted log replica %s (%d bytes)\n", d.Name(), d.Size())
	}
	return nil
}
