package fs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dcache/dcache/cachelayer"
)

// ctlNameOp answers an op that would create, remove or rename name in
// parent when that is the statistics directory or a name inside it: 0 when
// it is not.
func (f *FS) ctlNameOp(parent uint64, name string, exists syscall.Errno) fuse.Status {
	switch {
	case isCtl(parent):
		return fuse.EPERM
	case f.isCtlEntry(parent, name):
		return fuse.Status(exists)
	}
	return fuse.OK
}

func (f *FS) create(cancel <-chan struct{}, h *fuse.InHeader, name string, obj cachelayer.NewObject, out *fuse.EntryOut, o op) fuse.Status {
	rq := f.begin(o, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if st := f.ctlNameOp(h.NodeId, name, syscall.EEXIST); st != fuse.OK {
		return st
	}
	in, err := f.eng.Create(rq.ctx, cachelayer.Ino(h.NodeId), name, obj, creator(h, obj.Mode))
	if err != nil {
		return f.toStatus(o.String(), err)
	}
	f.fillEntry(&in, out)
	return fuse.OK
}

func (f *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	mode := syscall.S_IFDIR | in.Mode&0o7777
	return f.create(cancel, &in.InHeader, name, cachelayer.NewObject{Mode: mode}, out, opMkdir)
}

func (f *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.create(cancel, &in.InHeader, name, cachelayer.NewObject{Mode: modeType(in.Mode, syscall.S_IFREG), Rdev: in.Rdev}, out, opMknod)
}

func (f *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return f.create(cancel, h, name, cachelayer.NewObject{Mode: syscall.S_IFLNK | 0o777, Target: target}, out, opSymlink)
}

func (f *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	rq := f.begin(opLink, in.Oldnodeid, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.Oldnodeid) {
		return fuse.EPERM
	}
	if st := f.ctlNameOp(in.NodeId, name, syscall.EEXIST); st != fuse.OK {
		return st
	}
	ino, err := f.eng.Link(rq.ctx, cachelayer.Ino(in.Oldnodeid), cachelayer.Ino(in.NodeId), name)
	if err != nil {
		return f.toStatus("link", err)
	}
	f.fillEntry(&ino, out)
	return fuse.OK
}

func (f *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	rq := f.begin(opUnlink, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if st := f.ctlNameOp(h.NodeId, name, syscall.EPERM); st != fuse.OK {
		return st
	}
	return f.toStatus("unlink", f.eng.Unlink(rq.ctx, cachelayer.Ino(h.NodeId), name))
}

func (f *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	rq := f.begin(opRmdir, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if st := f.ctlNameOp(h.NodeId, name, syscall.EPERM); st != fuse.OK {
		return st
	}
	return f.toStatus("rmdir", f.eng.Rmdir(rq.ctx, cachelayer.Ino(h.NodeId), name))
}

// renameWhiteout is RENAME_WHITEOUT, for overlay filesystems: not supported.
const renameWhiteout = 1 << 2

func (f *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	rq := f.begin(opRename, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if in.Flags&renameWhiteout != 0 {
		return fuse.Status(syscall.EINVAL)
	}
	if st := f.ctlNameOp(in.NodeId, oldName, syscall.EPERM); st != fuse.OK {
		return st
	}
	if st := f.ctlNameOp(in.Newdir, newName, syscall.EPERM); st != fuse.OK {
		return st
	}
	err := f.eng.Rename(rq.ctx, cachelayer.Ino(in.NodeId), oldName, cachelayer.Ino(in.Newdir), newName, in.Flags)
	return f.toStatus("rename", err)
}

func (f *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	rq := f.begin(opReadlink, h.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(h.NodeId) {
		return nil, fuse.EINVAL
	}
	t, err := f.eng.Readlink(cachelayer.Ino(h.NodeId))
	if err != nil {
		return nil, f.toStatus("readlink", err)
	}
	return []byte(t), fuse.OK
}

// dirHandle is an open directory. The kernel may read one handle from
// several threads; mu serializes them.
type dirHandle struct {
	mu  sync.Mutex
	h   *cachelayer.DirHandle
	ctl []fuse.DirEntry // a directory of the statistics tree: its entries
}

func (f *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	rq := f.begin(opOpendir, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	dh := &dirHandle{}
	if isCtl(in.NodeId) {
		ents, st := f.ctlDirEntries(in.NodeId)
		if st != fuse.OK {
			return st
		}
		dh.ctl = ents
	} else {
		h, err := f.eng.OpenDir(cachelayer.Ino(in.NodeId))
		if err != nil {
			return f.toStatus("opendir", err)
		}
		dh.h = h
	}
	fh := f.newFh()
	f.mu.Lock()
	f.dirs[fh] = dh
	f.mu.Unlock()
	out.Fh = fh
	return fuse.OK
}

func (f *FS) dir(fh uint64) *dirHandle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dirs[fh]
}

func (f *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	rq := f.begin(opReaddir, in.NodeId, in.Offset, cancel)
	defer f.end(&rq, 0)
	return f.readDir(in, out, false)
}

// ReadDirPlus returns entries with their attributes; each named object
// counts as a lookup for the kernel, so it takes a reference.
func (f *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	rq := f.begin(opReaddir, in.NodeId, in.Offset, cancel)
	defer f.end(&rq, 0)
	return f.readDir(in, out, true)
}

// ctlDirOff is the offset of the statistics directory's entry at the end
// of a root listing that shows it (stats.show_in_readdir): past any offset
// the engine hands out.
const ctlDirOff = 1<<63 - 1

func (f *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	d := f.dir(in.Fh)
	if d == nil {
		return fuse.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctl != nil {
		ctlReadDir(d.ctl, in, out, plus, func(id uint64, eo *fuse.EntryOut) { f.ctlEntry(id, eo) })
		return fuse.OK
	}
	showCtl := in.NodeId == fuse.FUSE_ROOT_ID && f.opts.Stats.ShowInReaddir
	if showCtl && in.Offset == ctlDirOff {
		return fuse.OK // the statistics directory was the last entry
	}
	if in.Offset == 0 {
		d.h.Rewind()
	}
	dir := cachelayer.Ino(in.NodeId)
	full := false
	d.h.Read(in.Offset, func(ent cachelayer.DirEntry, next uint64) bool {
		de := fuse.DirEntry{Name: ent.Name, Ino: uint64(ent.Ino), Mode: ent.Type, Off: next}
		if ent.Name == f.ctlName() && in.NodeId == fuse.FUSE_ROOT_ID {
			return true // shadowed by the statistics directory
		}
		if !plus {
			full = !out.AddDirEntry(de)
			return !full
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			full = true
			return false
		}
		if ent.Name == "." || ent.Name == ".." {
			return true // the kernel ignores the attributes of these
		}
		// Gone since the listing's view was taken: node id 0 tells the
		// kernel not to link it.
		if obj, err := f.eng.LookupRef(dir, ent.Name); err == nil {
			f.fillEntry(&obj, eo)
			if obj.Mode&syscall.S_IFMT != ent.Type {
				out.FixMode(obj.Mode)
			}
		}
		return true
	})
	if showCtl && !full {
		de := fuse.DirEntry{Name: f.ctlName(), Ino: ctlDirID, Mode: syscall.S_IFDIR, Off: ctlDirOff}
		if !plus {
			out.AddDirEntry(de)
		} else if eo := out.AddDirLookupEntry(de); eo != nil {
			f.ctlEntry(ctlDirID, eo)
		}
	}
	return fuse.OK
}

func (f *FS) ReleaseDir(in *fuse.ReleaseIn) {
	f.mu.Lock()
	delete(f.dirs, in.Fh)
	f.mu.Unlock()
}

func (f *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	rq := f.begin(opFsyncdir, in.NodeId, 0, cancel)
	defer f.end(&rq, 0)
	if isCtl(in.NodeId) {
		return fuse.OK
	}
	return f.toStatus("fsyncdir", f.eng.Sync(rq.ctx))
}
