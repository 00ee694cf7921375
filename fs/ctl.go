package fs

// The statistics and control directory (.dcache by default) at the mount
// root: files generated from the engine's figures when opened (so that one
// cat sees one consistent snapshot), control files that act when written,
// and objects/INO, one object's state. It behaves like sysfs: nothing can
// be created, removed or renamed in it, the generated files are read-only
// and the control files are writable by root only. It is never logged and
// never destaged: its nodes are not engine objects.
//
// Node ids: the engine's object ids count up from 1 and never reach bit
// 62, so ids with bit 63 set are the directory's nodes, and those with bits
// 63 and 62 set are objects/INO (INO in the low bits).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/dcache/dcache/cachelayer"
)

const (
	ctlBit     = uint64(1) << 63
	ctlObjBit  = uint64(1) << 62
	ctlDirID   = ctlBit | 1
	ctlObjsID  = ctlBit | 2
	ctlFileID0 = ctlBit | 16
)

// ctlFile is one file of the directory.
type ctlFile struct {
	name string
	// gen renders a read-only file's content; nil for control files.
	gen func(f *FS) []byte
	// ctl, for a control file: show is what reading it says, act performs
	// a write.
	show func(f *FS) []byte
	act  func(f *FS, ctx context.Context, arg string) syscall.Errno
}

// ctlFiles lists the directory's files; a file's node id is ctlFileID0
// plus its index.
var ctlFiles = []ctlFile{
	{name: "stats", gen: func(f *FS) []byte { return f.report().Text() }},
	{name: "stats.json", gen: func(f *FS) []byte { return f.report().json() }},
	{name: "inflight", gen: (*FS).inflightText},
	{name: "log", gen: (*FS).logText},
	{name: "config", gen: func(f *FS) []byte { return f.opts.Stats.ConfigYAML }},
	{name: "flush", show: (*FS).flushShow, act: (*FS).flushAct},
	{name: "mode", show: (*FS).modeShow, act: (*FS).modeAct},
	{name: "check", show: (*FS).checkShow, act: (*FS).checkAct},
}

func isCtl(id uint64) bool { return id&ctlBit != 0 }

// ctlName is the directory's name.
func (f *FS) ctlName() string { return f.opts.Stats.DirName }

// isCtlEntry reports whether (parent, name) is the directory itself.
func (f *FS) isCtlEntry(parent uint64, name string) bool {
	return parent == fuse.FUSE_ROOT_ID && name == f.ctlName()
}

// ctlFileOf returns the file with node id id.
func ctlFileOf(id uint64) (*ctlFile, bool) {
	if id < ctlFileID0 || id >= ctlFileID0+uint64(len(ctlFiles)) {
		return nil, false
	}
	return &ctlFiles[id-ctlFileID0], true
}

// ctlAttr fills the attributes of a node of the directory.
func (f *FS) ctlAttr(id uint64, a *fuse.Attr) syscall.Errno {
	*a = fuse.Attr{Ino: id, Nlink: 1, Blksize: cachelayer.BlockSize}
	t := uint64(f.started.Unix())
	a.Atime, a.Mtime, a.Ctime = t, t, t
	switch {
	case id == ctlDirID || id == ctlObjsID:
		a.Mode = syscall.S_IFDIR | 0o555
		a.Nlink = 2
	case id&ctlObjBit != 0:
		if _, err := f.eng.GetAttr(cachelayer.Ino(id &^ (ctlBit | ctlObjBit))); err != nil {
			return syscall.ENOENT
		}
		a.Mode = syscall.S_IFREG | 0o444
	default:
		cf, ok := ctlFileOf(id)
		if !ok {
			return syscall.ENOENT
		}
		a.Mode = syscall.S_IFREG | 0o444
		if cf.act != nil {
			a.Mode = syscall.S_IFREG | 0o644
		}
	}
	return 0
}

func (f *FS) ctlEntry(id uint64, out *fuse.EntryOut) fuse.Status {
	*out = fuse.EntryOut{NodeId: id, Generation: 1}
	out.EntryValid, out.EntryValidNsec = splitTime(f.opts.EntryTimeout)
	out.AttrValid, out.AttrValidNsec = splitTime(f.opts.AttrTimeout)
	return fuse.Status(f.ctlAttr(id, &out.Attr))
}

// ctlLookup resolves name in a directory of the tree.
func (f *FS) ctlLookup(parent uint64, name string, out *fuse.EntryOut) fuse.Status {
	switch parent {
	case ctlDirID:
		if name == "objects" {
			return f.ctlEntry(ctlObjsID, out)
		}
		for i := range ctlFiles {
			if ctlFiles[i].name == name {
				return f.ctlEntry(ctlFileID0+uint64(i), out)
			}
		}
	case ctlObjsID:
		n, err := strconv.ParseUint(name, 10, 64)
		if err == nil && n > 0 && n&(ctlBit|ctlObjBit) == 0 {
			return f.ctlEntry(ctlBit|ctlObjBit|n, out)
		}
	default:
		return fuse.ENOTDIR
	}
	return fuse.ENOENT
}

// ctlHandle is an open generated file: its content, fixed at open.
type ctlHandle struct {
	data []byte
}

// ctlHandles are the open files of the tree, by handle number.
type ctlHandles struct {
	mu sync.Mutex
	m  map[uint64]*ctlHandle
}

func (f *FS) ctlOpen(id uint64, flags, uid uint32, out *fuse.OpenOut) fuse.Status {
	if id == ctlDirID || id == ctlObjsID {
		return fuse.Status(syscall.EISDIR)
	}
	writing := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if writing && uid != 0 {
		return fuse.EACCES // the kernel checks the mode too; this holds without it
	}
	var data []byte
	if id&ctlObjBit != 0 {
		if writing {
			return fuse.EACCES
		}
		b, errno := f.objectText(cachelayer.Ino(id &^ (ctlBit | ctlObjBit)))
		if errno != 0 {
			return fuse.Status(errno)
		}
		data = b
	} else {
		cf, ok := ctlFileOf(id)
		if !ok {
			return fuse.ENOENT
		}
		switch {
		case cf.act == nil && writing:
			return fuse.EACCES
		case cf.gen != nil:
			data = cf.gen(f)
		case !writing:
			data = cf.show(f)
		}
	}
	fh := f.newFh()
	f.ctlh.mu.Lock()
	f.ctlh.m[fh] = &ctlHandle{data: data}
	f.ctlh.mu.Unlock()
	out.Fh = fh
	// Every read and write comes to us: no page cache (the content is
	// made at open), and a control write acts when written.
	out.OpenFlags = fuse.FOPEN_DIRECT_IO
	return fuse.OK
}

func (f *FS) ctlRead(fh, off uint64, buf []byte) (fuse.ReadResult, fuse.Status) {
	f.ctlh.mu.Lock()
	h := f.ctlh.m[fh]
	f.ctlh.mu.Unlock()
	if h == nil {
		return nil, fuse.EBADF
	}
	if off >= uint64(len(h.data)) {
		return fuse.ReadResultData(nil), fuse.OK
	}
	n := copy(buf, h.data[off:])
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (f *FS) ctlRelease(fh uint64) {
	f.ctlh.mu.Lock()
	delete(f.ctlh.m, fh)
	f.ctlh.mu.Unlock()
}

// ctlWrite performs a write to a control file: the whole write is one
// command (surrounding white space ignored).
func (f *FS) ctlWrite(ctx context.Context, id uint64, data []byte) (uint32, fuse.Status) {
	cf, ok := ctlFileOf(id)
	if !ok || cf.act == nil {
		return 0, fuse.EACCES
	}
	if errno := cf.act(f, ctx, strings.TrimSpace(string(data))); errno != 0 {
		return 0, fuse.Status(errno)
	}
	return uint32(len(data)), fuse.OK
}

// ctlSetAttr allows only what a shell's "echo x > file" sends: truncating
// a control file to 0 (with its times), which changes nothing.
func (f *FS) ctlSetAttr(in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	cf, ok := ctlFileOf(in.NodeId)
	if !ok || cf.act == nil || in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 ||
		in.Valid&fuse.FATTR_SIZE != 0 && in.Size != 0 {
		return fuse.EPERM
	}
	out.AttrValid, out.AttrValidNsec = splitTime(f.opts.AttrTimeout)
	return fuse.Status(f.ctlAttr(in.NodeId, &out.Attr))
}

// ctlDirEntries lists a directory of the tree.
func (f *FS) ctlDirEntries(id uint64) ([]fuse.DirEntry, fuse.Status) {
	ents := []fuse.DirEntry{{Name: ".", Ino: id, Mode: syscall.S_IFDIR}, {Name: "..", Mode: syscall.S_IFDIR}}
	switch id {
	case ctlDirID:
		ents[1].Ino = fuse.FUSE_ROOT_ID
		for i, cf := range ctlFiles {
			ents = append(ents, fuse.DirEntry{Name: cf.name, Ino: ctlFileID0 + uint64(i), Mode: syscall.S_IFREG})
		}
		ents = append(ents, fuse.DirEntry{Name: "objects", Ino: ctlObjsID, Mode: syscall.S_IFDIR})
	case ctlObjsID:
		// Not every object: the ones with records in the log.
		ents[1].Ino = ctlDirID
		for _, ino := range f.eng.LoggedObjects(1000) {
			ents = append(ents, fuse.DirEntry{Name: strconv.FormatUint(uint64(ino), 10), Ino: ctlBit | ctlObjBit | uint64(ino), Mode: syscall.S_IFREG})
		}
	default:
		return nil, fuse.ENOTDIR
	}
	return ents, fuse.OK
}

// ctlReadDir serves a listing from its entries; offsets are indexes.
func ctlReadDir(ents []fuse.DirEntry, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool, fill func(id uint64, eo *fuse.EntryOut)) {
	for i := int(in.Offset); i < len(ents); i++ {
		de := ents[i]
		de.Off = uint64(i + 1)
		if !plus {
			if !out.AddDirEntry(de) {
				return
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			return
		}
		if de.Name != "." && de.Name != ".." {
			fill(de.Ino, eo)
		}
	}
}

// userError logs why a control write was refused and returns errno.
func (f *FS) userError(file, got, accepted string, errno syscall.Errno) syscall.Errno {
	f.log.WithFields(logrus.Fields{"file": f.ctlName() + "/" + file, "written": got, "accepted": accepted}).
		Warnf("refused a write to %s/%s: %s", f.ctlName(), file, syscall.Errno(errno).Error())
	return errno
}

func (f *FS) flushShow() []byte {
	return []byte("write \"all\" to destage every dirty byte, or a path relative to the mount to destage\n" +
		"that file or directory tree; the write returns when the data is in the backend\n")
}

// flushAct destages everything ("all") or one tree (a path relative to
// the mount root).
func (f *FS) flushAct(ctx context.Context, arg string) syscall.Errno {
	const accepted = `"all" or a path relative to the mount`
	if arg == "" {
		return f.userError("flush", arg, accepted, syscall.EINVAL)
	}
	start := time.Now()
	if err := f.syncKernel(); err != nil {
		f.log.WithError(err).Error("flush: the kernel could not write back its dirty pages of the mount")
		return syscall.EIO
	}
	var err error
	if arg == "all" {
		err = f.eng.Flush(ctx)
	} else {
		ino, errno := f.resolve(arg)
		if errno != 0 {
			return f.userError("flush", arg, accepted, errno)
		}
		err = f.eng.FlushTree(ctx, ino)
	}
	if err != nil {
		return syscall.Errno(f.toStatus("flush", err))
	}
	f.log.WithFields(logrus.Fields{"what": arg, "took": time.Since(start).Round(time.Millisecond)}).Info("flushed on request")
	return 0
}

// syncKernel makes the kernel write back the dirty pages it holds for the
// mount (up to fuse.kernel_dirty of them) and waits for it, so that a flush
// covers every byte written before it, not only those that have reached
// the engine. The writes arrive as ordinary WRITE requests, served by
// other goroutines while this one waits.
func (f *FS) syncKernel() error {
	if f.mountDir == "" {
		return nil
	}
	d, err := os.Open(f.mountDir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return err
	}
	// syncfs starts the write-back of every dirty page of the mount, but
	// recent kernels do not wait for a FUSE mount's (a hung server must
	// not hang sync(2)); fsync does. Only files open for writing can have
	// dirty pages: closing a file writes its pages back first.
	for _, ino := range f.writers.list() {
		oi, err := f.eng.ObjectInfo(cachelayer.Ino(ino))
		if err != nil || len(oi.Paths) == 0 {
			continue // gone, or unlinked: nobody can read its data after the close
		}
		fd, err := unix.Open(filepath.Join(f.mountDir, oi.Paths[0]), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			f.log.WithError(err).WithField("path", oi.Paths[0]).Warn("flush: could not open a file to take the kernel's dirty pages of it")
			continue
		}
		err = unix.Fsync(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("fsync %s: %w", oi.Paths[0], err)
		}
	}
	return nil
}

// resolve walks a path relative to the mount root (a leading / allowed).
func (f *FS) resolve(p string) (cachelayer.Ino, syscall.Errno) {
	ino := cachelayer.RootIno
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			in, err := f.eng.GetAttr(ino)
			if err != nil {
				return 0, syscall.ENOENT
			}
			ino = in.Parent
			continue
		}
		in, err := f.eng.Lookup(ino, c)
		if err != nil {
			return 0, syscall.Errno(f.toStatus("flush", err))
		}
		ino = in.Ino
	}
	return ino, 0
}

func (f *FS) modeShow() []byte { return []byte(f.eng.Mode().String() + "\n") }

// modeAct switches the cache mode of the live filesystem (dcache mode
// writes here).
func (f *FS) modeAct(ctx context.Context, arg string) syscall.Errno {
	const accepted = "write-back, write-through or write-around"
	m, err := cachelayer.ParseMode(arg)
	if err != nil {
		return f.userError("mode", arg, accepted, syscall.EINVAL)
	}
	old := f.eng.Mode()
	if err := f.eng.SetMode(ctx, m, false); err != nil {
		return syscall.Errno(f.toStatus("mode", err))
	}
	if m != cachelayer.ModeWriteBack {
		// Files opened from now on bypass the page cache (openOut); what
		// the kernel holds of earlier writes is handed over now, to be
		// written in the new mode.
		if err := f.syncKernel(); err != nil {
			f.log.WithError(err).Warn("mode: the kernel could not write back its dirty pages of the mount")
		}
	}
	if old != m {
		f.log.WithFields(logrus.Fields{"from": old.String(), "to": m.String()}).Info("cache mode changed on request")
	}
	return 0
}

func (f *FS) checkShow() []byte {
	return []byte("no consistency checker is built in yet: writing \"run\" fails with EOPNOTSUPP\n")
}

func (f *FS) checkAct(ctx context.Context, arg string) syscall.Errno {
	if arg != "run" {
		return f.userError("check", arg, `"run"`, syscall.EINVAL)
	}
	f.log.WithField("file", f.ctlName()+"/check").Warn("a consistency check was asked for, but no checker is built in yet (EOPNOTSUPP)")
	return syscall.EOPNOTSUPP
}

// objectText renders objects/INO.
func (f *FS) objectText(ino cachelayer.Ino) ([]byte, syscall.Errno) {
	oi, err := f.eng.ObjectInfo(ino)
	if err != nil {
		return nil, syscall.Errno(f.toStatus("object", err))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ino: %d\n", oi.Ino)
	fmt.Fprintf(&b, "type: %s\n", typeName(oi.Mode))
	for _, p := range oi.Paths {
		fmt.Fprintf(&b, "path: %s\n", p)
	}
	fmt.Fprintf(&b, "size: %d\n", oi.Size)
	fmt.Fprintf(&b, "nlink: %d\n", oi.Nlink)
	fmt.Fprintf(&b, "dirty_bytes: %d\n", oi.DirtyBytes)
	fmt.Fprintf(&b, "clean_bytes: %d\n", oi.CleanBytes)
	if oi.LogLast > 0 {
		fmt.Fprintf(&b, "log_lsn: %d-%d\n", oi.LogFirst, oi.LogLast)
	} else {
		fmt.Fprintf(&b, "log_lsn: none\n")
	}
	fmt.Fprintf(&b, "destage_attempts: %d\n", oi.DestageAttempts)
	if oi.LastError != "" {
		fmt.Fprintf(&b, "last_error: %s\n", oi.LastError)
	}
	fmt.Fprintf(&b, "extents: # offset+length location\n")
	for _, c := range oi.Cached {
		state := "clean"
		if c.Dirty {
			state = fmt.Sprintf("dirty lsn>=%d", c.MinLSN)
		}
		fmt.Fprintf(&b, "  %d+%d cache %s\n", c.Off, c.Len, state)
	}
	for _, x := range oi.Extents {
		fmt.Fprintf(&b, "  %d+%d segment %d offset %d record %d+%d\n", x.Off, x.Len, x.Addr.Segment, x.Addr.Off+uint64(x.Skip), x.Addr.Off, x.Addr.Len)
	}
	if oi.Truncated {
		fmt.Fprintf(&b, "  ... (more extents not shown)\n")
	}
	return []byte(b.String()), 0
}

func typeName(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "directory"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	case syscall.S_IFCHR:
		return "char device"
	case syscall.S_IFBLK:
		return "block device"
	}
	return "unknown"
}
