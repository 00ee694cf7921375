// Package device is the small block-I/O abstraction under the log area (and
// later a block-device backend). A Device is a fixed-size array of bytes with
// positional reads and writes and a Sync that makes every completed write
// durable.
//
// Implementations:
//
//   - OpenFile: a regular file (preallocated with fallocate(2)) or a block
//     device; Sync is fdatasync(2).
//   - OpenMmap: a file mapped MAP_SHARED, the persistent-memory style; Sync is
//     msync(MS_SYNC) of the ranges written since the last Sync.
//   - NewMem: plain memory, for tests and benchmarks.
//   - NewCrashable: memory that remembers which writes were synced, so a test
//     can take the state after a simulated power loss (Crash).
//   - NewFaulty: wraps another Device and injects errors, short writes,
//     slowness or a vanished device through composable Injectors.
//
// Every implementation is safe for concurrent use: reads, writes and syncs may
// run from several goroutines at once. Writes are never extended past Size;
// such a write fails with ErrOutOfRange.
package device

import (
	"errors"
	"fmt"
)

// Device is a fixed-size, randomly addressable store of bytes.
type Device interface {
	// ReadAt reads len(p) bytes at off. Like io.ReaderAt it returns a
	// non-nil error whenever n < len(p).
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt writes len(p) bytes at off. The bytes are durable only after
	// a later Sync returns nil.
	WriteAt(p []byte, off int64) (int, error)
	// Sync makes every WriteAt that completed before it was called
	// durable, also when other Syncs run at the same time (the log area
	// overlaps syncs).
	Sync() error
	// Size is the number of usable bytes.
	Size() int64
	// Close releases the device. Operations after Close fail with ErrClosed.
	Close() error
	// Name identifies the device in messages and logs (a path, or a label).
	Name() string
}

// Kinder is implemented by devices that can say what they are ("file",
// "block", "mmap", "mem", ...); see KindOf.
type Kinder interface {
	Kind() string
}

// KindOf returns d's kind, or "unknown" when d does not implement Kinder.
func KindOf(d Device) string {
	if k, ok := d.(Kinder); ok {
		return k.Kind()
	}
	return "unknown"
}

var (
	// ErrClosed is returned by operations on a closed device.
	ErrClosed = errors.New("device: closed")
	// ErrOutOfRange is returned by a read or write outside [0, Size).
	ErrOutOfRange = errors.New("device: access out of range")
	// ErrInvalidSize is returned when a device is created with a size that
	// is not positive.
	ErrInvalidSize = errors.New("device: invalid size")
)

// checkRange validates an access of n bytes at off on a device of size size.
func checkRange(name string, off int64, n int, size int64) error {
	if off < 0 || int64(n) > size || off > size-int64(n) {
		return fmt.Errorf("%w: %s: %d bytes at offset %d, size %d", ErrOutOfRange, name, n, off, size)
	}
	return nil
}
