package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dcache/dcache/config"
)

// loadConfig reads the configuration for a command from the embedded
// default, --config, DCACHE_* variables and flags.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	return config.Load(defaultConfig, path, cmd.Flags(), os.Environ())
}

func addConfigFlags(fl *pflag.FlagSet) {
	fl.String("config", "", "configuration file (YAML); the embedded default when empty")
	config.RegisterFlags(fl)
}

func mountCmd() *cobra.Command {
	var detach bool
	var readyFd int
	var pprofAddr string
	cmd := &cobra.Command{
		Use:   "mount [--config FILE] [-d] MOUNTPOINT",
		Short: "Mount a dcache filesystem (in the foreground unless -d)",
		Long: `Mount a dcache filesystem on MOUNTPOINT.

In the foreground, SIGINT or SIGTERM unmounts: in-flight requests drain,
everything dirty is destaged to the backend and the log is left empty.
With -d the command returns once the mount is ready, leaving the daemon
running; it logs to DATA_DIR/dcache.log. "dcache umount MOUNTPOINT" stops it.`,
		Args: exactArgs(1, "MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if detach {
				return startDetached(cfg, args[0])
			}
			if pprofAddr != "" {
				startPprof(pprofAddr)
			}
			return runMount(cfg, args[0], readyFd)
		},
	}
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "run in the background once mounted")
	cmd.Flags().IntVar(&readyFd, "ready-fd", -1, "file descriptor to report readiness on (used by -d)")
	cmd.Flags().MarkHidden("ready-fd")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "serve Go's profiler on this address (for example 127.0.0.1:6060)")
	addConfigFlags(cmd.Flags())
	return cmd
}

// startPprof serves net/http/pprof for profiling a live daemon.
func startPprof(addr string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go http.ListenAndServe(addr, mux)
}

// runMount mounts and serves until a signal or an unmount.
func runMount(cfg *config.Config, mountpoint string, readyFd int) error {
	out := io.Writer(os.Stderr)
	var ready *os.File
	if readyFd >= 0 {
		ready = os.NewFile(uintptr(readyFd), "ready")
		f := &daemonLog{path: filepath.Join(cfg.DataDir, "dcache.log")}
		out = f
		defer f.Close()
	}
	report := func(err error) error {
		if ready != nil {
			if err != nil {
				// One line: the exit code the foreground command would
				// have had, and the message.
				msg := strings.ReplaceAll(err.Error(), "\n", "; ")
				fmt.Fprintf(ready, "error %d %s\n", exitCode(err), msg)
			} else {
				fmt.Fprintf(ready, "ok\n")
			}
			ready.Close()
			ready = nil
		}
		return err
	}
	logger, err := newLogger(cfg, out)
	if err != nil {
		return report(err)
	}
	mnt, err := prepareMountpoint(mountpoint, logger.WithField("component", "main"))
	if err != nil {
		return report(err)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	s, err := openStack(cfg, logger, mnt)
	if err != nil {
		return report(err)
	}
	report(nil)
	select {
	case sig := <-sigs:
		s.log.WithField("signal", sig.String()).Info("unmounting")
		s.state("draining")
		s.unmount()
	case <-s.fsys.Unmounted():
		s.state("draining")
		s.log.Info("unmounted by the kernel")
	}
	go func() {
		// A second signal while draining: say what is going on.
		for sig := range sigs {
			s.log.WithField("signal", sig.String()).Warn("still draining: destaging dirty data before exit; kill -9 is safe (the log holds everything) but the next mount will replay it")
		}
	}()
	err = s.teardown()
	s.state("stopped")
	return err
}

// startDetached runs "dcache mount" again as a daemon in a new session and
// waits until it reports the mount ready (or why it failed).
func startDetached(cfg *config.Config, mountpoint string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	var args []string
	for _, a := range os.Args[1:] {
		if a == "-d" || a == "--detach" || a == "--detach=true" {
			continue
		}
		args = append(args, a)
	}
	args = append(args, "--ready-fd", "3")
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	c := exec.Command(exe, args...)
	c.Stdin, c.Stdout, c.Stderr = devnull, devnull, devnull
	c.ExtraFiles = []*os.File{w}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	w.Close()
	line, err := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if err != nil {
		// The daemon died before reporting (its log says why).
		state, _ := c.Process.Wait()
		return fmt.Errorf("daemon exited before the mount was ready (%v); see %s", state, filepath.Join(cfg.DataDir, "dcache.log"))
	}
	line = strings.TrimSpace(line)
	if line != "ok" {
		c.Process.Wait()
		code, msg := exitFailure, strings.TrimPrefix(line, "error ")
		if n, rest, ok := strings.Cut(msg, " "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				code, msg = v, rest
			}
		}
		return &exitError{code: code, err: errors.New(msg)}
	}
	fmt.Printf("dcache: mounted %s (pid %d, log %s)\n", mountpoint, c.Process.Pid, filepath.Join(cfg.DataDir, "dcache.log"))
	c.Process.Release()
	return nil
}

// daemonLog is a detached daemon's log, DATA_DIR/dcache.log. The file (and
// the data dir) is created at the first line logged: the data dir may not
// exist yet on a first mount, and a mount refused before the stack opens (a
// missing mount point) logs nothing and so creates nothing. When the file
// cannot be created the lines are dropped; the error that stops the mount
// reaches the user through the ready pipe either way.
type daemonLog struct {
	path string

	mu     sync.Mutex // guards the fields below
	f      *os.File
	failed bool
}

func (l *daemonLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil && !l.failed {
		if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err == nil {
			l.f, _ = os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		}
		l.failed = l.f == nil
	}
	if l.f == nil {
		return len(p), nil
	}
	return l.f.Write(p)
}

func (l *daemonLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f, l.failed = nil, true
	return err
}
