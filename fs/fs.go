// Package fs is dcache's FUSE front end: it speaks the kernel's protocol
// (go-fuse's raw API) and turns each request into a call on the engine
// (package cachelayer). It is the only package that knows FUSE and errno.
//
// It implements fuse.RawFileSystem directly rather than go-fuse's node API:
// the engine already is the namespace, so node ids are object ids, there is
// no second, shadow inode tree to keep in step (or to pay memory for per
// object), and the kernel's lookup counts map onto engine references
// (LookupRef/Create/Link take one, FORGET drops them), which keep an
// unlinked object alive while the kernel may still name it.
//
// Permissions are checked by the kernel (mount option default_permissions)
// against the attributes we report, for the calling user; the filesystem
// clears setuid/setgid itself on write, truncate and chown, because it
// negotiates "handle killpriv v2" so that the kernel does not ask for the
// security.capability xattr on every write.
//
// With the kernel's write-back cache, a write(2) in write-back mode returns
// once the kernel's page cache holds it; the WRITE request reaches the
// engine (step 1 of DESIGN.md's path of one write) at the kernel's
// write-back, at fsync, at close, or when the mount's dirty limit
// (MountOptions.KernelDirty) is reached. The durability contract is the
// same: fsync waits for both. Flush and a switch away from write-back first
// have the kernel hand over its dirty pages (FS.syncKernel); files opened in
// write-through or write-around bypass the page cache.
package fs

import (
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/cachelayer"
)

// Options tune what the kernel may cache, and the statistics directory.
type Options struct {
	AttrTimeout     time.Duration // attributes
	EntryTimeout    time.Duration // name -> object
	NegativeTimeout time.Duration // "no such name"
	Stats           StatsOptions
}

// StatsOptions configure the statistics and control directory.
type StatsOptions struct {
	DirName       string        // its name at the mount root (default .dcache)
	ShowInReaddir bool          // list it in the root directory
	HungThreshold time.Duration // requests older than this are hung (default 5s)
	ConfigYAML    []byte        // the content of its config file
}

// FS serves one engine over FUSE.
type FS struct {
	fuse.RawFileSystem // ENOSYS for what is not implemented below (locks are the kernel's, local)

	eng  *cachelayer.Engine
	opts Options
	log  *logrus.Entry

	// writeback says the mount asks for the kernel's write-back cache;
	// kernelTimes that the kernel granted it, and so keeps the mtime and
	// ctime of regular files on writes itself (set before serving, then
	// read-only).
	writeback   bool
	kernelTimes bool

	mu      sync.Mutex
	dirs    map[uint64]*dirHandle
	nextFh  uint64
	server  *fuse.Server
	unmount chan struct{}
	// mountDir is where the FS is mounted (set by Mount).
	mountDir string
	writers  writers

	started time.Time
	stats   *opStats
	win     *windows
	ctlh    ctlHandles
}

// New returns a filesystem serving eng.
func New(eng *cachelayer.Engine, opts Options, log *logrus.Entry) *FS {
	if opts.Stats.DirName == "" {
		opts.Stats.DirName = ".dcache"
	}
	if opts.Stats.HungThreshold <= 0 {
		opts.Stats.HungThreshold = 5 * time.Second
	}
	f := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		eng:           eng,
		opts:          opts,
		log:           log,
		dirs:          make(map[uint64]*dirHandle),
		unmount:       make(chan struct{}),
		started:       time.Now(),
		stats:         newOpStats(),
		win:           newWindows(),
	}
	f.ctlh.m = make(map[uint64]*ctlHandle)
	f.win.zero = f.takeSample()
	return f
}

func (f *FS) String() string { return "dcache" }

// Init is called once the kernel has connected, before any request.
func (f *FS) Init(s *fuse.Server) {
	f.kernelTimes = f.writeback && s.KernelSettings().Flags64()&fuse.CAP_WRITEBACK_CACHE != 0
	f.mu.Lock()
	f.server = s
	f.mu.Unlock()
	go f.sampler()
}

// OnUnmount is called when the kernel unmounts the filesystem.
func (f *FS) OnUnmount() {
	select {
	case <-f.unmount:
	default:
		close(f.unmount)
	}
}

// Unmounted is closed when the kernel has unmounted the filesystem.
func (f *FS) Unmounted() <-chan struct{} { return f.unmount }

func splitTime(t time.Duration) (uint64, uint32) {
	return uint64(t / time.Second), uint32(t % time.Second)
}

// fillAttr converts an engine inode.
func fillAttr(in *cachelayer.Inode, a *fuse.Attr) {
	a.Ino = uint64(in.Ino)
	a.Size = in.Size
	a.Blocks = in.Blocks * (cachelayer.BlockSize / 512)
	a.Atime, a.Atimensec = uint64(in.Atime.Sec()), in.Atime.Nsec()
	a.Mtime, a.Mtimensec = uint64(in.Mtime.Sec()), in.Mtime.Nsec()
	a.Ctime, a.Ctimensec = uint64(in.Ctime.Sec()), in.Ctime.Nsec()
	a.Mode = in.Mode
	a.Nlink = in.Nlink
	a.Uid, a.Gid = in.Uid, in.Gid
	a.Rdev = in.Rdev
	a.Blksize = cachelayer.BlockSize
}

func (f *FS) fillEntry(in *cachelayer.Inode, out *fuse.EntryOut) {
	out.NodeId = uint64(in.Ino)
	out.Generation = 1
	out.EntryValid, out.EntryValidNsec = splitTime(f.opts.EntryTimeout)
	out.AttrValid, out.AttrValidNsec = splitTime(f.opts.AttrTimeout)
	fillAttr(in, &out.Attr)
}

func (f *FS) fillAttrOut(in *cachelayer.Inode, out *fuse.AttrOut) {
	out.AttrValid, out.AttrValidNsec = splitTime(f.opts.AttrTimeout)
	fillAttr(in, &out.Attr)
}

func caller(h *fuse.InHeader) cachelayer.Caller {
	return cachelayer.Caller{Uid: h.Uid, Gid: h.Gid, Pid: h.Pid}
}

// Lookup resolves a name. A missing name is answered with node id 0 and the
// negative timeout, so the kernel caches the absence.
func (f *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	rq := f.begin(opLookup, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(h.NodeId) {
		return f.ctlLookup(h.NodeId, name, out)
	}
	if f.isCtlEntry(h.NodeId, name) {
		return f.ctlEntry(ctlDirID, out)
	}
	in, err := f.eng.LookupRef(cachelayer.Ino(h.NodeId), name)
	if err == cachelayer.ErrNotExist && f.opts.NegativeTimeout > 0 {
		*out = fuse.EntryOut{}
		out.EntryValid, out.EntryValidNsec = splitTime(f.opts.NegativeTimeout)
		return fuse.OK
	}
	if err != nil {
		return f.toStatus("lookup", err)
	}
	f.fillEntry(&in, out)
	return fuse.OK
}

// Forget drops the kernel's lookup references.
func (f *FS) Forget(nodeid, nlookup uint64) {
	if nodeid == fuse.FUSE_ROOT_ID || isCtl(nodeid) {
		return
	}
	f.eng.Unref(cachelayer.Ino(nodeid), int32(nlookup))
}

func (f *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	rq := f.begin(opGetattr, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		out.AttrValid, out.AttrValidNsec = splitTime(f.opts.AttrTimeout)
		return fuse.Status(f.ctlAttr(in.NodeId, &out.Attr))
	}
	ino, err := f.eng.GetAttr(cachelayer.Ino(in.NodeId))
	if err != nil {
		return f.toStatus("getattr", err)
	}
	f.fillAttrOut(&ino, out)
	return fuse.OK
}

func (f *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	rq := f.begin(opSetattr, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		return f.ctlSetAttr(in, out)
	}
	var sa cachelayer.SetAttr
	v := in.Valid
	if v&fuse.FATTR_MODE != 0 {
		m := in.Mode
		sa.Mode = &m
	}
	if v&fuse.FATTR_UID != 0 {
		u := in.Uid
		sa.Uid = &u
	}
	if v&fuse.FATTR_GID != 0 {
		g := in.Gid
		sa.Gid = &g
	}
	if v&fuse.FATTR_SIZE != 0 {
		s := in.Size
		sa.Size = &s
	}
	now := cachelayer.TimeOf(time.Now())
	if v&fuse.FATTR_ATIME != 0 {
		t := cachelayer.MakeTime(int64(in.Atime), in.Atimensec)
		if v&fuse.FATTR_ATIME_NOW != 0 {
			t = now
		}
		sa.Atime = &t
	}
	if v&fuse.FATTR_MTIME != 0 {
		t := cachelayer.MakeTime(int64(in.Mtime), in.Mtimensec)
		if v&fuse.FATTR_MTIME_NOW != 0 {
			t = now
		}
		sa.Mtime = &t
	}
	if v&fuse.FATTR_CTIME != 0 {
		t := cachelayer.MakeTime(int64(in.Ctime), in.Ctimensec)
		sa.Ctime = &t
	}
	sa.KillSuidGid = v&fuse.FATTR_KILL_SUIDGID != 0
	ino, err := f.eng.SetAttr(rq.ctx, cachelayer.Ino(in.NodeId), sa)
	if err != nil {
		return f.toStatus("setattr", err)
	}
	f.fillAttrOut(&ino, out)
	return fuse.OK
}

// StatFs reports the backend's real capacity, and objects are not limited;
// inside a directory quota's tree (the kernel names the object df asked
// about), the quota's limits and usage instead.
func (f *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	rq := f.begin(opStatfs, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	at := h.NodeId
	if isCtl(at) {
		at = fuse.FUSE_ROOT_ID // the statistics directory is on the root's filesystem
	}
	info, err := f.eng.StatFSAt(cachelayer.Ino(at))
	if err != nil {
		return f.toStatus("statfs", err)
	}
	const freeObjects = 1 << 40
	files, ffree := info.Objects+freeObjects, uint64(freeObjects)
	if info.Files > 0 {
		files, ffree = info.Files, info.FreeFiles
	}
	*out = fuse.StatfsOut{
		Blocks:  info.Total / uint64(info.BlockSize),
		Bfree:   info.Free / uint64(info.BlockSize),
		Bavail:  info.Avail / uint64(info.BlockSize),
		Files:   files,
		Ffree:   ffree,
		Bsize:   info.BlockSize,
		Frsize:  info.BlockSize,
		NameLen: info.NameLen,
	}
	return fuse.OK
}

// Access is answered by the kernel itself under default_permissions; an
// explicit access(2) check still gets a real answer.
func (f *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	rq := f.begin(opAccess, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		var a fuse.Attr
		if errno := f.ctlAttr(in.NodeId, &a); errno != 0 {
			return fuse.Status(errno)
		}
		if in.Mask&2 != 0 && (in.Uid != 0 || a.Mode&0o200 == 0) || in.Mask&1 != 0 && a.Mode&0o111 == 0 {
			return fuse.EACCES
		}
		return fuse.OK
	}
	ino, err := f.eng.GetAttr(cachelayer.Ino(in.NodeId))
	if err != nil {
		return f.toStatus("access", err)
	}
	if in.Uid == 0 {
		if in.Mask&1 != 0 && ino.Mode&0o111 == 0 && !ino.IsDir() {
			return fuse.EACCES
		}
		return fuse.OK
	}
	var bits uint32
	switch {
	case in.Uid == ino.Uid:
		bits = ino.Mode >> 6
	case in.Gid == ino.Gid:
		bits = ino.Mode >> 3
	default:
		bits = ino.Mode
	}
	if in.Mask&^(bits&7) != 0 {
		return fuse.EACCES
	}
	return fuse.OK
}

// newFh hands out a handle number.
func (f *FS) newFh() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextFh++
	return f.nextFh
}

var _ fuse.RawFileSystem = (*FS)(nil)

// modeType returns the file type bits, with def when mode has none.
func modeType(mode, def uint32) uint32 {
	if mode&syscall.S_IFMT == 0 {
		return mode | def
	}
	return mode
}
