package backend

import (
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// File is an open file of an FS. ReadAt and WriteAt may be called
// concurrently on disjoint ranges.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync flushes data and metadata (fsync).
	Sync() error
	// SyncData flushes data and the metadata needed to read it back (fdatasync).
	SyncData() error
	Stat() (iofs.FileInfo, error)
}

// FSStat is what StatFS reports about a filesystem, in bytes.
type FSStat struct {
	Total uint64 // size of the filesystem
	Free  uint64 // free bytes
	Avail uint64 // free bytes available to unprivileged users
}

// FS is the filesystem the backend lives on. The backend reaches the disk
// only through it, so tests can put a fault injector underneath. Errors from
// the operating system must be returned wrapped (errors.Is(err,
// syscall.ENOSPC) must hold for a full disk).
type FS interface {
	// Create creates a new file for reading and writing; it fails if name exists.
	Create(name string) (File, error)
	// OpenFile opens a file with os.OpenFile flags.
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	Remove(name string) error
	MkdirAll(dir string, perm os.FileMode) error
	// ReadDir lists dir, sorted by name.
	ReadDir(dir string) ([]iofs.DirEntry, error)
	Stat(name string) (iofs.FileInfo, error)
	// SyncDir makes the entries of dir durable (fsync of the directory).
	SyncDir(dir string) error
	// Lock takes an exclusive, non-blocking lock on the file name (creating
	// it if needed) and records the caller's pid in it. When another holder
	// has the lock, the error wraps syscall.EWOULDBLOCK and the file is left
	// untouched. Closing the returned value releases the lock.
	Lock(name string) (io.Closer, error)
	// StatFS reports the size and free space of the filesystem holding path.
	StatFS(path string) (FSStat, error)
}

// OSFS is the FS of the operating system.
type OSFS struct{}

var _ FS = OSFS{}

func (OSFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OSFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OSFS) Rename(oldname, newname string) error        { return os.Rename(oldname, newname) }
func (OSFS) Remove(name string) error                    { return os.Remove(name) }
func (OSFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }
func (OSFS) ReadDir(dir string) ([]iofs.DirEntry, error) { return os.ReadDir(dir) }
func (OSFS) Stat(name string) (iofs.FileInfo, error)     { return os.Stat(name) }
func (OSFS) StatFS(path string) (FSStat, error)          { return statFS(path) }
func (OSFS) SyncDir(dir string) error                    { return syncDir(dir) }
func (OSFS) Lock(name string) (io.Closer, error)         { return lockFile(name) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

func statFS(path string) (FSStat, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return FSStat{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	bs := uint64(st.Bsize)
	return FSStat{Total: st.Blocks * bs, Free: st.Bfree * bs, Avail: st.Bavail * bs}, nil
}

type osFile struct{ *os.File }

func (f osFile) SyncData() error {
	rc, err := f.File.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

type fileLock struct{ f *os.File }

func (l fileLock) Close() error {
	// Closing the descriptor releases the flock; the explicit unlock makes the
	// release independent of descriptors inherited by children.
	uerr := flock(l.f, unix.LOCK_UN)
	cerr := l.f.Close()
	if uerr != nil {
		return uerr
	}
	return cerr
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if ferr != nil {
		return &os.PathError{Op: "flock", Path: f.Name(), Err: ferr}
	}
	return nil
}

func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt(pid, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write pid to %s: %w", name, err)
	}
	return fileLock{f}, nil
}
