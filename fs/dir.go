package fs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dcache/dcache/cachelayer"
)

func (f *FS) create(cancel <-chan struct{}, h *fuse.InHeader, name string, obj cachelayer.NewObject, out *fuse.EntryOut, op string) fuse.Status {
	in, err := f.eng.Create(cancelCtx(cancel), cachelayer.Ino(h.NodeId), name, obj, creator(h, obj.Mode))
	if err != nil {
		return f.toStatus(op, err)
	}
	f.fillEntry(&in, out)
	return fuse.OK
}

func (f *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	mode := syscall.S_IFDIR | in.Mode&0o7777
	return f.create(cancel, &in.InHeader, name, cachelayer.NewObject{Mode: mode}, out, "mkdir")
}

func (f *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.create(cancel, &in.InHeader, name, cachelayer.NewObject{Mode: modeType(in.Mode, syscall.S_IFREG), Rdev: in.Rdev}, out, "mknod")
}

func (f *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return f.create(cancel, h, name, cachelayer.NewObject{Mode: syscall.S_IFLNK | 0o777, Target: target}, out, "symlink")
}

func (f *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	ino, err := f.eng.Link(cancelCtx(cancel), cachelayer.Ino(in.Oldnodeid), cachelayer.Ino(in.NodeId), name)
	if err != nil {
		return f.toStatus("link", err)
	}
	f.fillEntry(&ino, out)
	return fuse.OK
}

func (f *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.toStatus("unlink", f.eng.Unlink(cancelCtx(cancel), cachelayer.Ino(h.NodeId), name))
}

func (f *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.toStatus("rmdir", f.eng.Rmdir(cancelCtx(cancel), cachelayer.Ino(h.NodeId), name))
}

// renameWhiteout is RENAME_WHITEOUT, for overlay filesystems: not supported.
const renameWhiteout = 1 << 2

func (f *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if in.Flags&renameWhiteout != 0 {
		return fuse.Status(syscall.EINVAL)
	}
	err := f.eng.Rename(cancelCtx(cancel), cachelayer.Ino(in.NodeId), oldName, cachelayer.Ino(in.Newdir), newName, in.Flags)
	return f.toStatus("rename", err)
}

func (f *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t, err := f.eng.Readlink(cachelayer.Ino(h.NodeId))
	if err != nil {
		return nil, f.toStatus("readlink", err)
	}
	return []byte(t), fuse.OK
}

// dirHandle is an open directory. The kernel may read one handle from
// several threads; mu serializes them.
type dirHandle struct {
	mu sync.Mutex
	h  *cachelayer.DirHandle
}

func (f *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	h, err := f.eng.OpenDir(cachelayer.Ino(in.NodeId))
	if err != nil {
		return f.toStatus("opendir", err)
	}
	fh := f.newFh()
	f.mu.Lock()
	f.dirs[fh] = &dirHandle{h: h}
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
	return f.readDir(in, out, false)
}

// ReadDirPlus returns entries with their attributes; each named object
// counts as a lookup for the kernel, so it takes a reference.
func (f *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, true)
}

func (f *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	d := f.dir(in.Fh)
	if d == nil {
		return fuse.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if in.Offset == 0 {
		d.h.Rewind()
	}
	dir := cachelayer.Ino(in.NodeId)
	d.h.Read(in.Offset, func(ent cachelayer.DirEntry, next uint64) bool {
		de := fuse.DirEntry{Name: ent.Name, Ino: uint64(ent.Ino), Mode: ent.Type, Off: next}
		if !plus {
			return out.AddDirEntry(de)
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
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
	return fuse.OK
}

func (f *FS) ReleaseDir(in *fuse.ReleaseIn) {
	f.mu.Lock()
	delete(f.dirs, in.Fh)
	f.mu.Unlock()
}

func (f *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return f.toStatus("fsyncdir", f.eng.Sync(cancelCtx(cancel)))
}
