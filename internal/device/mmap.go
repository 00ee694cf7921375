package device

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Mmap is a Device over a file mapped MAP_SHARED, the way persistent memory
// (a DAX file on Optane or similar) is used: WriteAt is a memory copy into the
// mapping and Sync is msync(MS_SYNC) of the pages written since the last Sync
// (on a DAX filesystem the kernel turns that into cache-line flushes).
type Mmap struct {
	name string
	f    *os.File
	size int64

	// mu guards data and closed: ReadAt, WriteAt and Sync hold it shared,
	// Close exclusively, so the mapping is never used after munmap.
	mu     sync.RWMutex
	data   []byte
	closed bool

	// syncMu serializes Syncs: a Sync must not return while ranges an
	// earlier, concurrent Sync took are still being flushed, or a write
	// completed before it would not be durable yet.
	// Lock order: mu, syncMu, dirtyMu.
	syncMu sync.Mutex

	dirtyMu sync.Mutex // guards dirty
	dirty   []span     // page-aligned ranges written since the last Sync
}

type span struct{ start, end int64 }

// maxDirtySpans bounds the dirty list; past it the ranges are merged into one
// covering span (a larger msync, never a missed one).
const maxDirtySpans = 64

var _ Device = (*Mmap)(nil)

// OpenMmap maps path. A missing file (or an existing empty one) is created and
// preallocated to size bytes when create is set, as with OpenFile; an
// existing file is mapped at its size.
func OpenMmap(path string, size int64, create bool) (Device, error) {
	fd, err := openFile(path, size, create)
	if err != nil {
		return nil, err
	}
	if fd.block {
		fd.Close()
		return nil, fmt.Errorf("device: %s is a block device; map a file on a DAX filesystem instead", path)
	}
	if fd.size != int64(int(fd.size)) {
		fd.Close()
		return nil, fmt.Errorf("%w: %s is too large to map (%d bytes)", ErrInvalidSize, path, fd.size)
	}
	data, err := unix.Mmap(fd.fd, 0, int(fd.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("device: mmap %s: %w", path, err)
	}
	return &Mmap{name: path, f: fd.f, size: fd.size, data: data}, nil
}

// ReadAt implements Device.
func (m *Mmap) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, ErrClosed
	}
	if err := checkRange(m.name, off, len(p), int64(len(m.data))); err != nil {
		return 0, err
	}
	return copy(p, m.data[off:]), nil
}

// WriteAt implements Device.
func (m *Mmap) WriteAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, ErrClosed
	}
	if err := checkRange(m.name, off, len(p), int64(len(m.data))); err != nil {
		return 0, err
	}
	n := copy(m.data[off:], p)
	if n > 0 {
		m.markDirty(off, off+int64(n))
	}
	return n, nil
}

func (m *Mmap) markDirty(start, end int64) {
	page := int64(os.Getpagesize())
	start = start / page * page
	end = min((end+page-1)/page*page, int64(len(m.data)))
	m.dirtyMu.Lock()
	defer m.dirtyMu.Unlock()
	if k := len(m.dirty); k > 0 {
		last := &m.dirty[k-1]
		if start <= last.end && end >= last.start {
			last.start = min(last.start, start)
			last.end = max(last.end, end)
			return
		}
	}
	m.dirty = append(m.dirty, span{start, end})
	if len(m.dirty) > maxDirtySpans {
		all := m.dirty[0]
		for _, s := range m.dirty[1:] {
			all.start = min(all.start, s.start)
			all.end = max(all.end, s.end)
		}
		m.dirty = append(m.dirty[:0], all)
	}
}

// Sync implements Device: msync(MS_SYNC) of every range written since the
// previous Sync. Ranges that fail stay dirty for the next attempt.
func (m *Mmap) Sync() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	m.dirtyMu.Lock()
	spans := m.dirty
	m.dirty = nil
	m.dirtyMu.Unlock()
	var errs []error
	var failed []span
	for _, s := range spans {
		if err := unix.Msync(m.data[s.start:s.end], unix.MS_SYNC); err != nil {
			errs = append(errs, fmt.Errorf("device: msync %s [%d,%d): %w", m.name, s.start, s.end, err))
			failed = append(failed, s)
		}
	}
	if len(failed) > 0 {
		m.dirtyMu.Lock()
		m.dirty = append(m.dirty, failed...)
		m.dirtyMu.Unlock()
	}
	return errors.Join(errs...)
}

// Size implements Device.
func (m *Mmap) Size() int64 { return m.size }

// Close implements Device: it syncs what is dirty, unmaps and closes the file.
func (m *Mmap) Close() error {
	syncErr := m.Sync()
	if errors.Is(syncErr, ErrClosed) {
		return syncErr
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	err := unix.Munmap(m.data)
	m.data = nil
	return errors.Join(syncErr, err, m.f.Close())
}

// Name implements Device.
func (m *Mmap) Name() string { return m.name }

// Kind implements Kinder.
func (m *Mmap) Kind() string { return "mmap" }
