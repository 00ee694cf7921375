package device

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"
)

// OpKind is a kind of device operation, usable as a bit set.
type OpKind uint8

// Operation kinds an Injector can match.
const (
	OpRead OpKind = 1 << iota
	OpWrite
	OpSync
	OpClose

	OpAll = OpRead | OpWrite | OpSync | OpClose
)

func (k OpKind) String() string {
	var parts []string
	for _, x := range []struct {
		k OpKind
		s string
	}{{OpRead, "read"}, {OpWrite, "write"}, {OpSync, "sync"}, {OpClose, "close"}} {
		if k&x.k != 0 {
			parts = append(parts, x.s)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// Op describes one operation about to run on a Faulty device.
type Op struct {
	Kind OpKind
	Off  int64 // reads and writes
	Len  int   // reads and writes
}

// Fault is what an Injector decides for one operation. The zero Fault lets
// the operation through untouched.
type Fault struct {
	// Delay is slept before the operation (delays of all injectors add up).
	Delay time.Duration
	// Err fails the operation: nothing is read or written.
	Err error
	// ShortWrite makes a write store only its first N bytes and return
	// Err, or io.ErrShortWrite when Err is nil.
	ShortWrite bool
	N          int
}

// Injector decides the fault, if any, for each operation. Injectors are
// called concurrently and must be safe for that.
type Injector interface {
	Inject(op Op) Fault
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(op Op) Fault

// Inject implements Injector.
func (f InjectorFunc) Inject(op Op) Fault { return f(op) }

// ErrVanished is the error of every operation on a device that has vanished
// (see Vanish).
var ErrVanished = errors.New("device: vanished")

// Faulty wraps a Device and passes every operation through its injectors
// first. The first injector that returns an error or a short write decides
// the outcome; delays of all injectors add up.
type Faulty struct {
	inner     Device
	injectors []Injector

	reads, writes, syncs atomic.Int64
}

var _ Device = (*Faulty)(nil)

// NewFaulty wraps inner with the given injectors.
func NewFaulty(inner Device, injectors ...Injector) *Faulty {
	return &Faulty{inner: inner, injectors: injectors}
}

func (f *Faulty) inject(op Op) Fault {
	var out Fault
	decided := false
	for _, inj := range f.injectors {
		flt := inj.Inject(op)
		out.Delay += flt.Delay
		if !decided && (flt.Err != nil || flt.ShortWrite) {
			out.Err, out.ShortWrite, out.N = flt.Err, flt.ShortWrite, flt.N
			decided = true
		}
	}
	if out.Delay > 0 {
		time.Sleep(out.Delay)
	}
	return out
}

func (f *Faulty) fail(op Op, err error) error {
	if op.Kind == OpSync || op.Kind == OpClose {
		return fmt.Errorf("device: %s %s: injected: %w", op.Kind, f.inner.Name(), err)
	}
	return fmt.Errorf("device: %s %s: %d bytes at %d: injected: %w", op.Kind, f.inner.Name(), op.Len, op.Off, err)
}

// ReadAt implements Device.
func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	f.reads.Add(1)
	op := Op{Kind: OpRead, Off: off, Len: len(p)}
	if flt := f.inject(op); flt.Err != nil {
		return 0, f.fail(op, flt.Err)
	}
	return f.inner.ReadAt(p, off)
}

// WriteAt implements Device.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	f.writes.Add(1)
	op := Op{Kind: OpWrite, Off: off, Len: len(p)}
	flt := f.inject(op)
	if flt.ShortWrite {
		n := min(max(flt.N, 0), len(p))
		if n > 0 {
			if _, err := f.inner.WriteAt(p[:n], off); err != nil {
				return 0, err
			}
		}
		err := flt.Err
		if err == nil {
			err = io.ErrShortWrite
		}
		return n, f.fail(op, err)
	}
	if flt.Err != nil {
		return 0, f.fail(op, flt.Err)
	}
	return f.inner.WriteAt(p, off)
}

// Sync implements Device.
func (f *Faulty) Sync() error {
	f.syncs.Add(1)
	op := Op{Kind: OpSync}
	if flt := f.inject(op); flt.Err != nil {
		return f.fail(op, flt.Err)
	}
	return f.inner.Sync()
}

// Size implements Device.
func (f *Faulty) Size() int64 { return f.inner.Size() }

// Close implements Device. An injected close error still closes the inner
// device, as a real close that reports an error still releases the file.
func (f *Faulty) Close() error {
	op := Op{Kind: OpClose}
	flt := f.inject(op)
	err := f.inner.Close()
	if flt.Err != nil {
		return errors.Join(f.fail(op, flt.Err), err)
	}
	return err
}

// Name implements Device.
func (f *Faulty) Name() string { return f.inner.Name() }

// Kind implements Kinder: the inner device's kind.
func (f *Faulty) Kind() string { return KindOf(f.inner) }

// Inner returns the wrapped device.
func (f *Faulty) Inner() Device { return f.inner }

// Counts returns how many reads, writes and syncs were attempted.
func (f *Faulty) Counts() (reads, writes, syncs int64) {
	return f.reads.Load(), f.writes.Load(), f.syncs.Load()
}

// FailAfter lets the first n operations of the given kinds through and fails
// every later one with err.
func FailAfter(kinds OpKind, n int64, err error) Injector {
	var count atomic.Int64
	return InjectorFunc(func(op Op) Fault {
		if op.Kind&kinds == 0 {
			return Fault{}
		}
		if count.Add(1) > n {
			return Fault{Err: err}
		}
		return Fault{}
	})
}

// Switch fails operations of its kinds with its error while it is on. It is
// toggled at run time, from any goroutine.
type Switch struct {
	kinds OpKind
	err   error
	on    atomic.Bool
}

// NewSwitch returns a Switch, initially off.
func NewSwitch(kinds OpKind, err error) *Switch {
	return &Switch{kinds: kinds, err: err}
}

// Vanish returns a Switch that, once on, fails every operation with
// ErrVanished, as a device that was unplugged.
func Vanish() *Switch { return NewSwitch(OpAll, ErrVanished) }

// Set turns the switch on or off.
func (s *Switch) Set(on bool) { s.on.Store(on) }

// On reports whether the switch is on.
func (s *Switch) On() bool { return s.on.Load() }

// Inject implements Injector.
func (s *Switch) Inject(op Op) Fault {
	if op.Kind&s.kinds != 0 && s.on.Load() {
		return Fault{Err: s.err}
	}
	return Fault{}
}

// ShortWriteAfter lets the first n writes through; every later write stores
// only its first half and fails with io.ErrShortWrite.
func ShortWriteAfter(n int64) Injector {
	var count atomic.Int64
	return InjectorFunc(func(op Op) Fault {
		if op.Kind != OpWrite || count.Add(1) <= n {
			return Fault{}
		}
		return Fault{ShortWrite: true, N: op.Len / 2}
	})
}

// Slow delays every operation of the given kinds by d.
func Slow(kinds OpKind, d time.Duration) Injector {
	return InjectorFunc(func(op Op) Fault {
		if op.Kind&kinds != 0 {
			return Fault{Delay: d}
		}
		return Fault{}
	})
}
