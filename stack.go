package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/backend"
	"github.com/dcache/dcache/cachelayer"
	"github.com/dcache/dcache/config"
	"github.com/dcache/dcache/fs"
	"github.com/dcache/dcache/internal/device"
	"github.com/dcache/dcache/logarea"
)

// lockName is the data directory's lock file: held (flock) by the running
// daemon, it holds the daemon's pid and mount point.
const lockName = "dcache.lock"

// stack is one mounted filesystem: every layer, opened in dependency order
// and closed in reverse.
type stack struct {
	cfg     *config.Config
	logger  *logrus.Logger
	log     *logrus.Entry
	lock    *os.File
	be      *backend.Store
	devs    []device.Device
	wal     *logarea.Log
	eng     *cachelayer.Engine
	fsys    *fs.FS
	srv     *fuse.Server
	mnt     string
	stopMem chan struct{}
	metrics *metricsServer
}

// newLogger builds the process logger from the configuration.
func newLogger(cfg *config.Config, out io.Writer) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(out)
	lvl, err := logrus.ParseLevel(string(cfg.Logging.Level))
	if err != nil {
		return nil, err
	}
	l.SetLevel(lvl)
	if cfg.Logging.Format == config.FormatJSON {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	return l, nil
}

// state logs a lifecycle state change.
func (s *stack) state(st string) {
	s.log.WithField("state", st).Info("lifecycle")
}

// lockDataDir takes the data directory's lock, refusing when another
// running dcache holds it.
func lockDataDir(dir, mnt string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return nil, fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := takeLock(f, dir); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := fmt.Fprintf(f, "%d\n%s\n", os.Getpid(), mnt); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockWait bounds the wait for a lock holder that died but has not finished
// exiting.
const lockWait = 10 * time.Second

// takeLock takes the data dir's lock on f. A daemon that was killed holds
// the lock until its last thread has left the kernel: one stuck on a
// request to its own stale mount leaves only when the next mount aborts
// that mount's connection (detachStale), a moment before this runs. So a
// holder whose pid no longer runs (or is a zombie) is waited for, up to
// lockWait; a running holder is refused at once.
func takeLock(f *os.File, dir string) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("data dir %s: lock: %w", dir, err)
		}
		pid, holder := readLock(dir)
		if pid <= 0 || processAlive(pid) {
			return fmt.Errorf("data dir %s is in use by another running dcache (pid %d, mounted on %s)", dir, pid, holder)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("data dir %s is still locked by pid %d (mounted on %s), which died %v ago or more but has not finished exiting", dir, pid, holder, lockWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLock returns the pid and mount point written in a data dir's lock.
func readLock(dir string) (int, string) {
	b, err := os.ReadFile(filepath.Join(dir, lockName))
	if err != nil {
		return 0, ""
	}
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
	pid, _ := strconv.Atoi(lines[0])
	mnt := ""
	if len(lines) > 1 {
		mnt = lines[1]
	}
	return pid, mnt
}

// engineConfig maps the configuration to the engine's.
func engineConfig(cfg *config.Config) cachelayer.Config {
	ec := cachelayer.Config{
		CacheSize:     int64(cfg.Cache.Size),
		DirtyBytes:    int64(cfg.Quota.DirtyBytes),
		HighWatermark: cfg.Flush.HighWatermark,
		LowWatermark:  cfg.Flush.LowWatermark,
		MaxDirtyAge:   cfg.Flush.MaxDirtyAge,
		SyncInterval:  cfg.Log.SyncInterval,
		RootUid:       uint32(os.Getuid()),
		RootGid:       uint32(os.Getgid()),

		ThrottleWatermark: cfg.Flush.ThrottleWatermark,
		SequentialCutoff:  int64(cfg.Flush.SequentialCutoff),
		WritebackJobs:     cfg.Flush.WritebackJobs,
	}
	switch cfg.Cache.Mode {
	case config.ModeWriteThrough:
		ec.Mode = cachelayer.ModeWriteThrough
	case config.ModeWriteAround:
		ec.Mode = cachelayer.ModeWriteAround
	default:
		ec.Mode = cachelayer.ModeWriteBack
	}
	if cfg.Cache.Eviction == config.EvictFIFO {
		ec.Eviction = cachelayer.EvictFIFO
	}
	ec.CleanThreshold = cfg.Backend.CleanThreshold
	switch cfg.Prefetch.Policy {
	case config.PrefetchSequential:
		ec.Prefetch = cachelayer.PrefetchSequential
	case config.PrefetchWholeFile:
		ec.Prefetch = cachelayer.PrefetchWholeFile
	default:
		ec.Prefetch = cachelayer.PrefetchNone
	}
	ec.PrefetchMaxWindow = int64(cfg.Prefetch.MaxWindow)
	for _, q := range cfg.Quota.Directories {
		ec.Quotas = append(ec.Quotas, cachelayer.DirQuota{Path: q.Path, Bytes: uint64(q.Bytes), Inodes: uint64(q.Inodes)})
	}
	switch cfg.Log.Sync {
	case config.SyncAlways:
		ec.Sync = cachelayer.SyncAlways
	case config.SyncInterval:
		ec.Sync = cachelayer.SyncInterval
	default:
		ec.Sync = cachelayer.SyncOnFsync
	}
	return ec
}

// openLogDevices opens every replica, creating and preallocating the
// missing ones when create is set (dcache format formats them all next).
func openLogDevices(cfg *config.Config, create bool) (devs []device.Device, err error) {
	for i, r := range cfg.Log.Replicas {
		d, err := openReplica(r, r.Path, create)
		if err != nil {
			closeDevices(devs)
			return nil, fmt.Errorf("log.replicas[%d] %s: %w", i, r.Path, err)
		}
		if d.Size() < int64(r.Size) {
			closeDevices(append(devs, d))
			return nil, fmt.Errorf("log.replicas[%d] %s: the device holds %d bytes, the configuration asks for %d", i, r.Path, d.Size(), int64(r.Size))
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// openReplica opens one replica's device at path, creating a missing file
// when create is set.
func openReplica(r config.Replica, path string, create bool) (device.Device, error) {
	if create {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, err
			}
		}
	}
	if r.Type == config.ReplicaAEP {
		return device.OpenMmap(path, int64(r.Size), create)
	}
	return device.OpenFile(path, int64(r.Size), create)
}

// creatingSuffix names a replica file being created: it is renamed to the
// configured path only once every replica of the new log is formatted.
const creatingSuffix = ".creating"

// prepareLog makes sure the log's replicas exist. When none does (a first
// mount), they are created and formatted together as one log of the
// filesystem fsID: each under PATH.creating, all formatted and synced, then
// renamed into place, so that a crash meanwhile leaves either no log (the
// next mount starts over) or a complete one. A crash between two renames
// leaves complete PATH.creating files beside the renamed ones; they are
// renamed in here. A replica missing beside existing ones is refused: a
// log's replica count is fixed when it is formatted. created reports
// whether a new log was made.
func prepareLog(cfg *config.Config, fsID [16]byte, log *logrus.Entry) (created bool, err error) {
	reps := cfg.Log.Replicas
	exists := make([]bool, len(reps))
	some := false
	for i, r := range reps {
		_, err := os.Stat(r.Path)
		switch {
		case err == nil:
			exists[i], some = true, true
		case !os.IsNotExist(err):
			return false, fmt.Errorf("log.replicas[%d] %s: %w", i, r.Path, err)
		}
	}
	if some {
		for i, r := range reps {
			if exists[i] {
				continue
			}
			tmp := r.Path + creatingSuffix
			if _, err := os.Stat(tmp); err == nil {
				if err := renameDurably(tmp, r.Path); err != nil {
					return false, fmt.Errorf("log.replicas[%d]: %w", i, err)
				}
				log.WithField("replica", r.Path).Warn("completed the creation of a log replica interrupted by a crash")
				continue
			}
			return false, fmt.Errorf("log.replicas[%d] %s does not exist, but the other replicas hold a log, whose replica count was fixed when it was formatted; restore the device, or run dcache format --yes to start a new log (records not yet destaged are lost)", i, r.Path)
		}
		return false, nil
	}

	devs := make([]device.Device, 0, len(reps))
	defer func() { closeDevices(devs) }()
	for i, r := range reps {
		tmp := r.Path + creatingSuffix
		if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
			return false, fmt.Errorf("log.replicas[%d]: remove %s left by an interrupted creation: %w", i, tmp, err)
		}
		d, err := openReplica(r, tmp, true)
		if err != nil {
			return false, fmt.Errorf("log.replicas[%d] %s: %w", i, r.Path, err)
		}
		devs = append(devs, d)
	}
	if err := logarea.Format(devs, fsID); err != nil {
		return false, fmt.Errorf("log: format: %w", err)
	}
	closeDevices(devs)
	devs = nil
	for i, r := range reps {
		if err := renameDurably(r.Path+creatingSuffix, r.Path); err != nil {
			return false, fmt.Errorf("log.replicas[%d]: %w", i, err)
		}
		log.WithField("replica", r.Path).Info("created and formatted a log replica")
	}
	return true, nil
}

// renameDurably renames from to to and syncs the directory.
func renameDurably(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(to), err)
	}
	return nil
}

func closeDevices(devs []device.Device) {
	for _, d := range devs {
		d.Close()
	}
}

func logConfig(cfg *config.Config) logarea.Config {
	lc := logarea.Config{Compression: cfg.Log.Compression == config.CompressionSnappy}
	switch cfg.Log.WriteQuorum {
	case config.QuorumMajority:
		lc.WriteQuorum = logarea.QuorumMajority
	case config.QuorumOne:
		lc.WriteQuorum = logarea.QuorumOne
	}
	return lc
}

// openBackend opens the configured backend: a directory, created when
// missing or empty, or a device, formatted when all zeros and refused when
// it holds anything else.
func openBackend(cfg *config.Config, logger *logrus.Logger) (*backend.Store, bool, error) {
	bcfg := backend.Config{SegmentSize: int64(cfg.Flush.SegmentSize), Buffered: !cfg.Backend.DirectIO}
	log := logger.WithField("component", "backend")
	if cfg.Backend.Type != config.BackendDevice {
		be, created, err := backend.Open(backend.OSFS{}, cfg.Backend.Path, bcfg, log)
		if err != nil {
			return nil, false, fmt.Errorf("backend %s: %w", cfg.Backend.Path, err)
		}
		return be, created, nil
	}
	d, err := backend.OpenDeviceFile(cfg.Backend.Path)
	if err != nil {
		return nil, false, fmt.Errorf("backend %s: %w", cfg.Backend.Path, err)
	}
	be, created, err := backend.OpenDevice(cfg.Backend.Path, d, d, bcfg, backend.DeviceOptions{}, log)
	if err != nil {
		d.Close()
		if errors.Is(err, backend.ErrForeign) || errors.Is(err, backend.ErrOtherFS) {
			return nil, false, fmt.Errorf("backend %s: %w; nothing was changed — if the device may be overwritten, run: dcache format --yes --backend",
				cfg.Backend.Path, err)
		}
		return nil, false, fmt.Errorf("backend %s: %w", cfg.Backend.Path, err)
	}
	return be, created, nil
}

// openStack opens every layer and mounts on mnt (already checked by
// prepareMountpoint). On error, what was opened is closed again.
func openStack(cfg *config.Config, logger *logrus.Logger, mnt string) (s *stack, err error) {
	s = &stack{cfg: cfg, logger: logger, mnt: mnt,
		log: logger.WithFields(logrus.Fields{"component": "main", "pid": os.Getpid()})}
	defer func() {
		if err != nil {
			s.teardown()
			s = nil
		}
	}()
	s.log.WithFields(logrus.Fields{"version": version, "mountpoint": mnt, "data_dir": cfg.DataDir}).Info("starting")
	s.state("create")
	if s.lock, err = lockDataDir(cfg.DataDir, mnt); err != nil {
		return s, err
	}
	s.state("init")
	var created bool
	s.be, created, err = openBackend(cfg, logger)
	if err != nil {
		return s, err
	}
	if created {
		s.log.WithField("path", cfg.Backend.Path).Info("created a new backend")
	}
	if _, err = prepareLog(cfg, s.be.ID(), s.log); err != nil {
		return s, err
	}
	if s.devs, err = openLogDevices(cfg, false); err != nil {
		return s, err
	}
	s.wal, err = logarea.Open(s.devs, s.be.ID(), logConfig(cfg), logger.WithField("component", "logarea"))
	if err != nil {
		if errors.Is(err, logarea.ErrNotFormatted) || errors.Is(err, logarea.ErrForeign) {
			return s, fmt.Errorf("log: %w; nothing was changed — if the log may be overwritten, run: dcache format --yes", err)
		}
		return s, fmt.Errorf("log: %w", err)
	}
	s.state("recover")
	s.eng, err = cachelayer.Open(engineConfig(cfg), s.be, cachelayer.NewLogWAL(s.wal), logger.WithField("component", "cachelayer"))
	if err != nil {
		return s, err
	}
	s.fsys = fs.New(s.eng, fs.Options{
		AttrTimeout:     cfg.Fuse.AttrTimeout,
		EntryTimeout:    cfg.Fuse.EntryTimeout,
		NegativeTimeout: cfg.Fuse.NegativeTimeout,
		Stats: fs.StatsOptions{
			DirName:       cfg.Stats.DirName,
			ShowInReaddir: cfg.Stats.ShowInReaddir,
			HungThreshold: cfg.Stats.HungThreshold,
			ConfigYAML:    cfg.YAML(),
		},
	}, logger.WithField("component", "fs"))
	s.srv, err = fs.Mount(mnt, s.fsys, fs.MountOptions{
		AllowOther:     cfg.Fuse.AllowOther,
		MaxWrite:       int(cfg.Fuse.MaxWrite),
		WritebackCache: cfg.Fuse.WritebackCache,
		ReadAhead:      int(cfg.Fuse.ReadAhead),
		KernelDirty:    int64(cfg.Fuse.KernelDirty),
		Debug:          cfg.Fuse.Debug,
		FsName:         cfg.DataDir,
	})
	if err != nil {
		return s, err
	}
	if addr := cfg.Stats.MetricsListen; addr != "" {
		if s.metrics, err = serveMetrics(addr, s.fsys, logger.WithField("component", "metrics")); err != nil {
			return s, fmt.Errorf("stats.metrics_listen %s: %w", addr, err)
		}
	}
	s.state("active")
	s.stopMem = make(chan struct{})
	go s.limitMemory(s.stopMem)
	return s, nil
}

// limitMemory keeps the Go heap within the memory budget: resident memory
// is the page pool (cache.size, mapped outside the Go heap) plus at most 15%
// of it plus 300 bytes per object. The runtime collects garbage harder as it
// nears the limit (a soft limit: live data is never dropped).
func (s *stack) limitMemory(stop <-chan struct{}) {
	// The runtime's limit covers the Go heap and stacks only; the binary,
	// thread stacks and the pool's own bookkeeping outside it get a margin.
	const outside = 32 << 20
	base := max(int64(s.cfg.Cache.Size)*15/100-outside, 48<<20)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		debug.SetMemoryLimit(base + 300*int64(s.eng.Info().Objects))
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// unmount asks the kernel to unmount. A busy mount (open files, a shell's
// cwd) is detached lazily: it disappears from the namespace now and the
// daemon serves the remaining users until they let go.
func (s *stack) unmount() {
	if s.srv == nil {
		return
	}
	err := s.srv.Unmount()
	if err == nil {
		return
	}
	s.log.WithError(err).Warn("mount is busy; detaching it lazily and waiting for open files to close")
	if err := syscall.Unmount(s.mnt, syscall.MNT_DETACH); err != nil {
		s.log.WithError(err).Error("lazy unmount failed")
	}
}

// teardown closes whatever is open, in reverse order: the engine destages
// everything and leaves the log empty.
func (s *stack) teardown() error {
	var errs []error
	if s.srv != nil {
		s.srv.Wait()
		s.srv = nil
	}
	if s.metrics != nil {
		s.metrics.close()
		s.metrics = nil
	}
	if s.stopMem != nil {
		close(s.stopMem)
		s.stopMem = nil
	}
	if s.eng != nil {
		start := time.Now()
		info := s.eng.Info()
		s.log.WithField("dirty_bytes", info.DirtyBytes).Info("destaging everything before stopping")
		if err := s.eng.Close(); err != nil {
			errs = append(errs, err)
		} else {
			s.log.WithField("took", time.Since(start).Round(time.Millisecond)).Info("destage complete")
		}
		s.eng = nil
	}
	if s.wal != nil {
		if err := s.wal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("log: %w", err))
		}
		s.wal = nil
	}
	closeDevices(s.devs) // the log leaves its devices to us
	s.devs = nil
	if s.be != nil {
		if err := s.be.Close(); err != nil {
			errs = append(errs, fmt.Errorf("backend: %w", err))
		}
		s.be = nil
	}
	if s.lock != nil {
		s.lock.Truncate(0)
		s.lock.Close()
		s.lock = nil
	}
	return errors.Join(errs...)
}
