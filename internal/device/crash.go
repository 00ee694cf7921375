package device

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// SectorSize is the unit of atomicity a Crashable assumes: a crash may tear
// a write at any sector boundary, but a sector is never half-written.
const SectorSize = 512

// Crashable is a memory Device that remembers which writes were synced, so
// that a test can take the state a power loss would leave (Crash): every
// synced byte, plus a random subset of the unsynced writes, some of them
// torn at sector boundaries. The idea follows pebble's crash-clone
// filesystem.
type Crashable struct {
	name  string
	syncs atomic.Int64

	mu      sync.Mutex // guards the fields below
	cur     []byte     // what reads see: every write applied
	durable []byte     // what survives a crash: synced writes only
	pending []pendingWrite
	closed  bool
}

type pendingWrite struct {
	off  int64
	data []byte
}

var _ Device = (*Crashable)(nil)

// NewCrashable returns a zero-filled crashable device of size bytes.
func NewCrashable(size int64) *Crashable {
	if size <= 0 {
		panic(fmt.Sprintf("device: NewCrashable size %d", size))
	}
	return newCrashableFrom(make([]byte, size))
}

func newCrashableFrom(img []byte) *Crashable {
	return &Crashable{name: "crashable", cur: img, durable: append([]byte(nil), img...)}
}

// SetName changes the name reported by Name; it returns c for chaining.
func (c *Crashable) SetName(name string) *Crashable {
	c.mu.Lock()
	c.name = name
	c.mu.Unlock()
	return c
}

// ReadAt implements Device; it sees every write, synced or not.
func (c *Crashable) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	if err := checkRange(c.name, off, len(p), int64(len(c.cur))); err != nil {
		return 0, err
	}
	return copy(p, c.cur[off:]), nil
}

// WriteAt implements Device.
func (c *Crashable) WriteAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	if err := checkRange(c.name, off, len(p), int64(len(c.cur))); err != nil {
		return 0, err
	}
	copy(c.cur[off:], p)
	c.pending = append(c.pending, pendingWrite{off: off, data: append([]byte(nil), p...)})
	return len(p), nil
}

// Sync implements Device: every write so far becomes durable.
func (c *Crashable) Sync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	for _, w := range c.pending {
		copy(c.durable[w.off:], w.data)
	}
	c.pending = nil
	c.syncs.Add(1)
	return nil
}

// Size implements Device.
func (c *Crashable) Size() int64 { return int64(len(c.durable)) }

// Close implements Device. A closed Crashable can still Crash.
func (c *Crashable) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.closed = true
	return nil
}

// Name implements Device.
func (c *Crashable) Name() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.name
}

// Kind implements Kinder.
func (c *Crashable) Kind() string { return "crashable" }

// Syncs is the number of successful Sync calls.
func (c *Crashable) Syncs() int64 { return c.syncs.Load() }

// Unsynced is the number of writes not yet made durable by a Sync.
func (c *Crashable) Unsynced() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Bytes returns a copy of what reads currently see.
func (c *Crashable) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.cur...)
}

// Crash returns a new Crashable holding the state a power loss at this moment
// could leave: all synced data, and each unsynced write (in the order they
// were issued) either lost, kept whole, or torn: kept for a random subset of
// the sectors it touches. The receiver is not changed. The new device has no
// pending writes.
func (c *Crashable) Crash(rng *rand.Rand) *Crashable {
	c.mu.Lock()
	defer c.mu.Unlock()
	img := append([]byte(nil), c.durable...)
	for _, w := range c.pending {
		switch rng.IntN(3) {
		case 0: // lost
		case 1:
			copy(img[w.off:], w.data)
		default: // torn at sector boundaries
			for start := int64(0); start < int64(len(w.data)); {
				end := min((w.off+start)/SectorSize*SectorSize+SectorSize-w.off, int64(len(w.data)))
				if rng.IntN(2) == 0 {
					copy(img[w.off+start:], w.data[start:end])
				}
				start = end
			}
		}
	}
	n := newCrashableFrom(img)
	n.name = c.name
	return n
}
