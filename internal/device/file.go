package device

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// File is a Device over a regular file or a block device. Sync is
// fdatasync(2): the log area preallocates its files, so no metadata other than
// the data itself has to reach the disk.
//
// Writes go through the page cache, and every WriteBehind bytes written a
// File asks the kernel to start writing them out (sync_file_range(2) with
// SYNC_FILE_RANGE_WRITE, which does not wait). Without it the dirty pages
// pile up until a Sync, which then writes them all while its caller
// waits: after a large write, an fsync of the mount, or a superblock
// update of the log, stalled for as long as writing out hundreds of
// megabytes takes. Durability is unchanged: only Sync makes writes durable.
type File struct {
	f     *os.File
	fd    int
	name  string
	size  int64
	block bool

	// unkicked counts the bytes written since writeback was last started.
	unkicked atomic.Int64
	closed   atomic.Bool
}

// WriteBehind is how many bytes a File lets its writers dirty before it
// starts writing them out in the background.
const WriteBehind = 8 << 20

var _ Device = (*File)(nil)

// OpenFile opens path as a device.
//
// A block device is used at its full size and never truncated or
// preallocated; size, when positive, must not exceed it. An existing regular
// file is opened as it is and its size is the device size (an existing empty
// file is preallocated like a new one when create is set). A missing file is
// created only when create is set: it is preallocated to size bytes with
// fallocate(2) (zeros are written where fallocate is not supported), synced,
// and its directory is synced so that the new name is durable too.
func OpenFile(path string, size int64, create bool) (Device, error) {
	return openFile(path, size, create)
}

func openFile(path string, size int64, create bool) (*File, error) {
	st, err := os.Stat(path)
	switch {
	case err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		return openBlock(path, size)
	case err == nil && st.Mode().IsRegular():
		if st.Size() == 0 && create {
			return createFile(path, size, false)
		}
		if st.Size() == 0 {
			return nil, fmt.Errorf("%w: %s is empty", ErrInvalidSize, path)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("device: open %s: %w", path, err)
		}
		return &File{f: f, fd: int(f.Fd()), name: path, size: st.Size()}, nil
	case err == nil:
		return nil, fmt.Errorf("device: %s is neither a regular file nor a block device (mode %v)", path, st.Mode())
	case errors.Is(err, os.ErrNotExist) && create:
		return createFile(path, size, true)
	default:
		return nil, fmt.Errorf("device: open %s: %w", path, err)
	}
}

func openBlock(path string, size int64) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("device: open block device %s: %w", path, err)
	}
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("device: size of block device %s: %w", path, err)
	}
	if n <= 0 {
		f.Close()
		return nil, fmt.Errorf("%w: block device %s has size %d", ErrInvalidSize, path, n)
	}
	if size > n {
		f.Close()
		return nil, fmt.Errorf("%w: block device %s has %d bytes, %d requested", ErrInvalidSize, path, n, size)
	}
	return &File{f: f, fd: int(f.Fd()), name: path, size: n, block: true}, nil
}

// createFile creates (or, when excl is false, fills an existing empty) file
// of size bytes.
func createFile(path string, size int64, excl bool) (_ *File, err error) {
	if size <= 0 {
		return nil, fmt.Errorf("%w: creating %s with size %d", ErrInvalidSize, path, size)
	}
	flags := os.O_RDWR
	if excl {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("device: create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			if excl {
				os.Remove(path)
			}
		}
	}()
	if err := preallocate(f, size); err != nil {
		return nil, fmt.Errorf("device: preallocate %s to %d bytes: %w", path, size, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("device: sync %s: %w", path, err)
	}
	if excl {
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	return &File{f: f, fd: int(f.Fd()), name: path, size: size}, nil
}

// preallocate reserves size bytes for f, so that later writes into the log
// area neither allocate blocks nor fail with ENOSPC.
func preallocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	return zeroFill(f, 0, size)
}

// zeroFill writes zeros over [off, off+n) of w.
func zeroFill(w io.WriterAt, off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(zero)))
		if _, err := w.WriteAt(zero[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("device: open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("device: sync directory %s: %w", dir, err)
	}
	return nil
}

// ReadAt implements Device.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := checkRange(d.name, off, len(p), d.size); err != nil {
		return 0, err
	}
	n, err := d.f.ReadAt(p, off)
	if err != nil {
		return n, fmt.Errorf("device: read %s: %w", d.name, err)
	}
	return n, nil
}

// WriteAt implements Device.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := checkRange(d.name, off, len(p), d.size); err != nil {
		return 0, err
	}
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("device: write %s: %w", d.name, err)
	}
	if d.unkicked.Add(int64(n)) >= WriteBehind {
		d.unkicked.Store(0)
		// Offset 0 and length 0: every dirty page of the file. A failure
		// only means the pages wait for the next Sync, as without it.
		_ = unix.SyncFileRange(d.fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	return n, nil
}

// Sync implements Device with fdatasync(2).
func (d *File) Sync() error {
	if d.closed.Load() {
		return ErrClosed
	}
	for {
		err := unix.Fdatasync(d.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("device: fdatasync %s: %w", d.name, err)
		}
		return nil
	}
}

// Size implements Device.
func (d *File) Size() int64 { return d.size }

// Close implements Device.
func (d *File) Close() error {
	if d.closed.Swap(true) {
		return ErrClosed
	}
	return d.f.Close()
}

// Name implements Device.
func (d *File) Name() string { return d.name }

// Kind implements Kinder: "block" or "file".
func (d *File) Kind() string {
	if d.block {
		return "block"
	}
	return "file"
}
