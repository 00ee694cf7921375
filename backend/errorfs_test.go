package backend

import (
	"io"
	"os"
	"sync"
)

// op names the operations an injector can fail.
type op uint32

const (
	opCreate op = 1 << iota
	opOpen
	opWrite
	opRead
	opSync // File.Sync and File.SyncData
	opSyncDir
	opRename
	opRemove
	opMkdir
	opLock
)

// injector decides which operations of an errFS fail. Once armed, it lets
// `after` eligible operations pass, then fails every eligible operation until
// it is disarmed (like a disk that filled up or went bad).
type injector struct {
	mu      sync.Mutex
	armed   bool
	ops     op
	after   int
	err     error
	partial bool // a failing WriteAt writes the first half of its bytes first
	hits    int
}

func (i *injector) arm(ops op, after int, err error, partial bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.armed, i.ops, i.after, i.err, i.partial, i.hits = true, ops, after, err, partial, 0
}

func (i *injector) disarm() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.armed = false
}

func (i *injector) failures() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.hits
}

// check returns the error to inject for o, if any, and whether a failing
// write should be partial.
func (i *injector) check(o op) (error, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.armed || i.ops&o == 0 {
		return nil, false
	}
	if i.after > 0 {
		i.after--
		return nil, false
	}
	i.hits++
	return i.err, i.partial
}

func (i *injector) fail(o op, opname, path string) error {
	if err, _ := i.check(o); err != nil {
		return &os.PathError{Op: opname, Path: path, Err: err}
	}
	return nil
}

// errFS is an FS whose operations fail as its injector says.
type errFS struct {
	FS
	inj *injector
}

func newErrFS() *errFS { return &errFS{FS: OSFS{}, inj: &injector{}} }

func (e *errFS) Create(name string) (File, error) {
	if err := e.inj.fail(opCreate, "create", name); err != nil {
		return nil, err
	}
	f, err := e.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return &errFile{File: f, inj: e.inj, name: name}, nil
}

func (e *errFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	o, what := opOpen, "open"
	if flag&os.O_CREATE != 0 { // segments are created this way, for O_DIRECT
		o, what = opCreate, "create"
	}
	if err := e.inj.fail(o, what, name); err != nil {
		return nil, err
	}
	f, err := e.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errFile{File: f, inj: e.inj, name: name}, nil
}

func (e *errFS) Rename(oldname, newname string) error {
	if err := e.inj.fail(opRename, "rename", oldname); err != nil {
		return err
	}
	return e.FS.Rename(oldname, newname)
}

func (e *errFS) Remove(name string) error {
	if err := e.inj.fail(opRemove, "remove", name); err != nil {
		return err
	}
	return e.FS.Remove(name)
}

func (e *errFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := e.inj.fail(opMkdir, "mkdir", dir); err != nil {
		return err
	}
	return e.FS.MkdirAll(dir, perm)
}

func (e *errFS) SyncDir(dir string) error {
	if err := e.inj.fail(opSyncDir, "fsync", dir); err != nil {
		return err
	}
	return e.FS.SyncDir(dir)
}

func (e *errFS) Lock(name string) (io.Closer, error) {
	if err := e.inj.fail(opLock, "flock", name); err != nil {
		return nil, err
	}
	return e.FS.Lock(name)
}

type errFile struct {
	File
	inj  *injector
	name string
}

func (f *errFile) WriteAt(p []byte, off int64) (int, error) {
	if err, partial := f.inj.check(opWrite); err != nil {
		n := 0
		if partial {
			n, _ = f.File.WriteAt(p[:len(p)/2], off)
		}
		return n, &os.PathError{Op: "write", Path: f.name, Err: err}
	}
	return f.File.WriteAt(p, off)
}

func (f *errFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.inj.fail(opRead, "read", f.name); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *errFile) Sync() error {
	if err := f.inj.fail(opSync, "fsync", f.name); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *errFile) SyncData() error {
	if err := f.inj.fail(opSync, "fdatasync", f.name); err != nil {
		return err
	}
	return f.File.SyncData()
}
