package device

import (
	"fmt"
	"sync"
)

// Mem is a Device held in memory. Sync does nothing: everything written is
// "durable" for as long as the value lives.
type Mem struct {
	name string

	mu     sync.RWMutex // guards the fields below
	buf    []byte
	closed bool
}

var _ Device = (*Mem)(nil)

// NewMem returns a zero-filled memory device of size bytes.
func NewMem(size int64) *Mem {
	if size <= 0 {
		panic(fmt.Sprintf("device: NewMem size %d", size))
	}
	return &Mem{name: "mem", buf: make([]byte, size)}
}

// NewMemFrom returns a memory device holding a copy of b.
func NewMemFrom(name string, b []byte) *Mem {
	return &Mem{name: name, buf: append([]byte(nil), b...)}
}

// SetName changes the name reported by Name; it returns m for chaining.
func (m *Mem) SetName(name string) *Mem {
	m.mu.Lock()
	m.name = name
	m.mu.Unlock()
	return m
}

// ReadAt implements Device.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, ErrClosed
	}
	if err := checkRange(m.name, off, len(p), int64(len(m.buf))); err != nil {
		return 0, err
	}
	return copy(p, m.buf[off:]), nil
}

// WriteAt implements Device.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	if err := checkRange(m.name, off, len(p), int64(len(m.buf))); err != nil {
		return 0, err
	}
	return copy(m.buf[off:], p), nil
}

// Sync implements Device.
func (m *Mem) Sync() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Size implements Device.
func (m *Mem) Size() int64 { return int64(len(m.buf)) }

// Close implements Device. The contents stay readable through Bytes.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	return nil
}

// Name implements Device.
func (m *Mem) Name() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.name
}

// Kind implements Kinder.
func (m *Mem) Kind() string { return "mem" }

// Bytes returns a copy of the device's contents.
func (m *Mem) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.buf...)
}
