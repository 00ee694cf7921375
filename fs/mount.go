package fs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// MountOptions are the kernel-facing choices a user may tune.
type MountOptions struct {
	AllowOther     bool
	MaxWrite       int  // bytes; at most 1 MiB
	WritebackCache bool // the kernel's write-back page cache
	ReadAhead      int  // bytes the kernel reads ahead; 0 keeps the kernel's default
	// KernelDirty is how many bytes of dirty page cache the kernel may
	// hold for the mount (its bdi max_bytes); 0 keeps the kernel's default.
	KernelDirty int64
	Debug       bool // log every request
	FsName      string
}

// capHandleKillprivV2 is FUSE_HANDLE_KILLPRIV_V2 (no name in go-fuse's
// capability list for it is exported on every platform).
const capHandleKillprivV2 = fuse.CAP_HANDLE_KILLPRIV_V2

// Mount mounts f on dir and serves it in the background; it returns once
// the kernel has completed the mount handshake.
func Mount(dir string, f *FS, mo MountOptions) (*fuse.Server, error) {
	f.mountDir = dir
	maxWrite := mo.MaxWrite
	if maxWrite <= 0 {
		maxWrite = 1 << 20
	}
	opts := &fuse.MountOptions{
		// Let other users use the mount; safe because of default_permissions.
		AllowOther: mo.AllowOther,
		// The kernel checks permissions for the calling user against the
		// attributes we report (mode, uid, gid), as for a local filesystem;
		// "dev"/"suid" keep device nodes and setuid programs meaningful like
		// on a local disk (root mounts only).
		Options: []string{"default_permissions", "dev", "suid"},
		FsName:  mo.FsName,
		Name:    "dcache",
		// 1 MiB writes (kernel default 128 KiB): about twice the sequential
		// write throughput without the write-back cache, and fewer requests.
		MaxWrite: maxWrite,
		// Requests in flight from the kernel's background queue (readahead,
		// write-back): go-fuse's default of 12 keeps 2 cores busy.
		MaxBackground: 16,
		// Every request in flight holds a MaxWrite-sized buffer from a
		// sync.Pool that each garbage collection empties. Unbounded, a burst
		// of write-back keeps dozens of megabytes of them live, which under
		// the daemon's memory limit means more collections, each followed
		// by reallocating (and clearing) the buffers: 4 KiB random writes ran
		// 35% slower. 24 buffers cover the background queue and the
		// synchronous requests beside it.
		MaxInflightRequestBytes: 24 * (maxWrite + 8<<10),
		// Read replies go out with writev: go-fuse's splice path logs a
		// line for every 1 MiB reply that exceeds the pipe size and then
		// copies anyway; splice made no measurable difference here.
		DisableSplice: true,
		// Mount with mount(2) when root, without needing fusermount3; fall
		// back to fusermount3 otherwise.
		DirectMount: true,
		// Symlinks never change in place (only by unlink/rename, which the
		// kernel sees), so the kernel may cache their targets.
		EnableSymlinkCaching: true,
		// Every change goes through this kernel, so the page cache need not
		// be dropped when mtime changes; files are opened with KEEP_CACHE.
		ExplicitDataCacheControl: true,
		// Locks stay the kernel's (local to this machine): EnableLocks off.
		Debug: mo.Debug,
		PanicHandler: func(r any) fuse.Status {
			f.log.WithField("panic", fmt.Sprint(r)).
				Errorf("request handler panicked; answering EIO\n%s", debug.Stack())
			return fuse.EIO
		},
		// - killpriv v2: the kernel stops asking for security.capability on
		//   every write (a round trip each) and lets us clear setuid/setgid
		//   on write, truncate and chown ourselves.
		// - readdirplus auto: ls -l gets attributes with the names, while a
		//   plain readdir of a large directory does not pay for them.
		// - direct I/O with mmap: files in quota trees are opened with
		//   FOPEN_DIRECT_IO (see FS.openOut); this keeps mmap working on
		//   them.
		ExtraCapabilities: capHandleKillprivV2 | fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
	}
	if mo.WritebackCache {
		// The kernel's write-back cache: writes complete in the page cache
		// and reach us in large batches. The kernel then owns mtime and
		// ctime of regular files (see FS.Init).
		opts.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	f.writeback = mo.WritebackCache
	if mo.Debug {
		opts.Logger = log.New(f.log.WriterLevel(logrus.DebugLevel), "", 0)
	}
	srv, err := fuse.NewServer(f, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	if mo.ReadAhead > 0 {
		// INIT can only lower the kernel's 128 KiB read-ahead; the mount's
		// backing-device setting raises it, so sequential reads arrive as
		// max-size (1 MiB) requests instead of 128 KiB ones.
		if err := writeBDI(dir, "read_ahead_kb", strconv.Itoa(mo.ReadAhead/1024)); err != nil {
			f.log.WithError(err).Warn("could not set the mount's read-ahead; sequential reads stay at the kernel's default")
		}
	}
	if mo.KernelDirty > 0 {
		setKernelDirty(dir, mo.KernelDirty, f.log)
	}
	return srv, nil
}

// setKernelDirty raises the dirty page cache the kernel lets the mount
// hold. For a FUSE mount the kernel allows 1% of its dirty limit, and
// enforces it strictly (the bdi's strict_limit), so a writer of small
// random blocks waits for the daemon after a few tens of MiB, where on a
// local filesystem it would write into memory and let writeback catch up.
// The strict limit stays: the mount never holds more than max_bytes.
// When the kernel's whole dirty limit is below bytes it refuses max_bytes
// (EINVAL), and the mount gets all of it instead.
func setKernelDirty(dir string, bytes int64, log *logrus.Entry) {
	err := writeBDI(dir, "max_bytes", strconv.FormatInt(bytes, 10))
	if errors.Is(err, syscall.EINVAL) {
		err = writeBDI(dir, "max_ratio", "100")
		if err == nil {
			log.WithField("kernel_dirty", bytes).Info("the kernel's dirty limit is below fuse.kernel_dirty; the mount may use all of it")
			return
		}
	}
	if err != nil {
		log.WithError(err).Warn("could not raise the kernel's dirty limit of the mount; small writes wait for the daemon sooner")
	}
}

// writeBDI writes one setting of the backing device info (/sys/class/bdi)
// of the filesystem mounted on dir.
func writeBDI(dir, name, value string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/%s", unix.Major(st.Dev), unix.Minor(st.Dev), name)
	return os.WriteFile(path, []byte(value), 0)
}
