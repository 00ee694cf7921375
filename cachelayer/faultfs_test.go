package cachelayer

import (
	"os"
	"sync"
	"time"

	"github.com/dcache/dcache/backend"
)

// faultFS is the OS's filesystem with backend writes that can be made to
// fail (EIO, ENOSPC: a disk gone bad or full) or to be slow.
type faultFS struct {
	backend.OSFS
	mu    sync.Mutex
	err   error         // when set, writes, syncs, creates and renames fail with it
	delay time.Duration // added to every write
	hits  int           // failures injected
}

func (f *faultFS) set(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *faultFS) setDelay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

func (f *faultFS) failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

func (f *faultFS) check(op, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		return nil
	}
	f.hits++
	return &os.PathError{Op: op, Path: name, Err: f.err}
}

func (f *faultFS) wait() {
	f.mu.Lock()
	d := f.delay
	f.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

func (f *faultFS) Create(name string) (backend.File, error) {
	if err := f.check("create", name); err != nil {
		return nil, err
	}
	file, err := f.OSFS.Create(name)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f, name: name}, nil
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (backend.File, error) {
	file, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f, name: name}, nil
}

func (f *faultFS) Rename(oldname, newname string) error {
	if err := f.check("rename", oldname); err != nil {
		return err
	}
	return f.OSFS.Rename(oldname, newname)
}

type faultFile struct {
	backend.File
	fs   *faultFS
	name string
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.wait()
	if err := f.fs.check("write", f.name); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if err := f.fs.check("sync", f.name); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) SyncData() error {
	if err := f.fs.check("sync", f.name); err != nil {
		return err
	}
	return f.File.SyncData()
}
