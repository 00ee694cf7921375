package fs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dcache/dcache/cachelayer"
)

// openOut fills the reply to an open. Files need no per-handle state
// beyond the open flags, so the handle number carries them.
func (f *FS) openOut(ino cachelayer.Ino, flags uint32, out *fuse.OpenOut) {
	out.Fh = uint64(flags)
	f.writers.note(uint64(ino), flags, 1)
	if f.eng.InQuota(ino) || f.eng.Mode() != cachelayer.ModeWriteBack {
		// A write past a directory quota must fail in write(2) and change
		// nothing; through the kernel's write-back cache it would succeed
		// into the page cache and fail only at fsync. In write-through and
		// write-around, write(2) must return only once the backend holds
		// the bytes, not once the page cache does. Such files bypass the
		// page cache (mmap still works: the mount allows it).
		out.OpenFlags = fuse.FOPEN_DIRECT_IO
		return
	}
	// Every change goes through this kernel, so its page cache stays
	// valid across opens (the mount uses explicit cache control).
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE
}

func (f *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	rq := f.begin(opCreate, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if st := f.ctlNameOp(in.NodeId, name, syscall.EEXIST); st != fuse.OK {
		return st
	}
	mode := modeType(in.Mode, syscall.S_IFREG)
	if mode&syscall.S_IFMT != syscall.S_IFREG {
		return fuse.EINVAL
	}
	obj, err := f.eng.Create(rq.ctx, cachelayer.Ino(in.NodeId), name, cachelayer.NewObject{Mode: mode}, creator(&in.InHeader, mode))
	if err != nil {
		return f.toStatus("create", err)
	}
	f.eng.Ref(obj.Ino, 1) // the open file
	f.fillEntry(&obj, &out.EntryOut)
	f.openOut(obj.Ino, in.Flags, &out.OpenOut)
	return fuse.OK
}

func (f *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	rq := f.begin(opOpen, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		return f.ctlOpen(in.NodeId, in.Flags, in.Uid, out)
	}
	ino := cachelayer.Ino(in.NodeId)
	obj, err := f.eng.GetAttr(ino)
	if err != nil {
		return f.toStatus("open", err)
	}
	if obj.IsDir() {
		return fuse.Status(syscall.EISDIR)
	}
	f.eng.Ref(ino, 1)
	f.eng.Opened(ino) // whole-file prefetch starts here
	f.openOut(ino, in.Flags, out)
	return fuse.OK
}

func (f *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	rq := f.begin(opRelease, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		f.ctlRelease(in.Fh)
		return
	}
	f.writers.note(in.NodeId, uint32(in.Fh), -1)
	f.eng.Unref(cachelayer.Ino(in.NodeId), 1)
}

func (f *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	rq := f.begin(opRead, in.NodeId, in.Offset, cancel)
	n := 0
	defer func() { f.end(&rq, int64(n)) }()
	if uint32(len(buf)) > in.Size {
		buf = buf[:in.Size]
	}
	if isCtl(in.NodeId) {
		return f.ctlRead(in.Fh, in.Offset, buf)
	}
	n, err := f.eng.Read(rq.ctx, cachelayer.Ino(in.NodeId), in.Offset, buf)
	if err != nil {
		return nil, f.toStatus("read", err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (f *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (written uint32, st fuse.Status) {
	rq := f.begin(opWrite, in.NodeId, in.Offset, cancel)
	defer func() { f.end(&rq, int64(written)) }()
	if isCtl(in.NodeId) {
		return f.ctlWrite(rq.ctx, in.NodeId, data)
	}
	kill := in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0
	// Writes from the kernel's page cache are made durable by the fsync the
	// kernel sends for O_SYNC files; a direct O_SYNC write must wait here.
	sync := in.WriteFlags&fuse.WRITE_CACHE == 0 && in.Flags&(syscall.O_SYNC|syscall.O_DSYNC) != 0
	wo := cachelayer.WriteOpts{KillSuidGid: kill, Sync: sync, KeepTimes: f.kernelTimes}
	n, err := f.eng.Write(rq.ctx, cachelayer.Ino(in.NodeId), in.Offset, data, wo)
	if err != nil {
		return 0, f.toStatus("write", err)
	}
	return uint32(n), fuse.OK
}

// Flush (close) has nothing to do here: the kernel writes its dirty pages
// back before it would send FLUSH, durability is fsync's business and locks
// are the kernel's. Answering ENOSYS is FUSE's way to say so once: the
// kernel then stops sending FLUSH, which saves a round trip on every close.
func (f *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }

func (f *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	rq := f.begin(opFsync, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		return fuse.OK
	}
	return f.toStatus("fsync", f.eng.Sync(rq.ctx))
}

func (f *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	rq := f.begin(opFallocate, in.NodeId, in.Offset, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		return fuse.EPERM
	}
	err := f.eng.Fallocate(rq.ctx, cachelayer.Ino(in.NodeId), in.Mode, in.Offset, in.Length)
	return f.toStatus("fallocate", err)
}

func (f *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	rq := f.begin(opLseek, in.NodeId, in.Offset, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		return fuse.EINVAL
	}
	switch in.Whence {
	case cachelayer.SeekData, cachelayer.SeekHole:
	default:
		return fuse.EINVAL // the kernel handles SEEK_SET, SEEK_CUR and SEEK_END itself
	}
	off, err := f.eng.Lseek(cachelayer.Ino(in.NodeId), in.Offset, int(in.Whence))
	if err != nil {
		return f.toStatus("lseek", err)
	}
	out.Offset = off
	return fuse.OK
}

func (f *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	rq := f.begin(opGetxattr, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(h.NodeId) {
		return 0, fuse.ENOATTR
	}
	v, err := f.eng.GetXattr(cachelayer.Ino(h.NodeId), name)
	if err != nil {
		return 0, f.toStatus("getxattr", err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), fuse.OK // size query
	}
	if len(v) > len(dest) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (f *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	rq := f.begin(opListxattr, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(h.NodeId) {
		return 0, fuse.OK
	}
	names, err := f.eng.ListXattr(cachelayer.Ino(h.NodeId))
	if err != nil {
		return 0, f.toStatus("listxattr", err)
	}
	n := 0
	for _, s := range names {
		n += len(s) + 1
	}
	if len(dest) == 0 {
		return uint32(n), fuse.OK
	}
	if n > len(dest) {
		return uint32(n), fuse.ERANGE
	}
	i := 0
	for _, s := range names {
		i += copy(dest[i:], s)
		dest[i] = 0
		i++
	}
	return uint32(n), fuse.OK
}

func (f *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, data []byte) fuse.Status {
	rq := f.begin(opSetxattr, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		return fuse.EPERM
	}
	err := f.eng.SetXattr(rq.ctx, cachelayer.Ino(in.NodeId), name, data, in.Flags)
	if err == cachelayer.ErrTooBig {
		return fuse.Status(syscall.E2BIG)
	}
	return f.toStatus("setxattr", err)
}

func (f *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	rq := f.begin(opRemovexattr, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(h.NodeId) {
		return fuse.EPERM
	}
	return f.toStatus("removexattr", f.eng.RemoveXattr(rq.ctx, cachelayer.Ino(h.NodeId), name))
}

// writers counts, per object, the open handles that may write. Only such
// files can have dirty pages in the kernel's page cache: the kernel writes
// a file's pages back when it is closed (see FS.syncKernel).
type writers struct {
	mu sync.Mutex
	n  map[uint64]int
}

// note adds d handles of ino opened with flags, if they may write.
func (w *writers) note(ino uint64, flags uint32, d int) {
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == nil {
		w.n = make(map[uint64]int)
	}
	if w.n[ino] += d; w.n[ino] <= 0 {
		delete(w.n, ino)
	}
}

// list returns the objects open for writing.
func (w *writers) list() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]uint64, 0, len(w.n))
	for ino := range w.n {
		out = append(out, ino)
	}
	return out
}
