// Package inflight is the hung-I/O finder's bookkeeping: a fixed table of
// slots, one per request being served, each saying what the request is and
// which stage it waits in. The filesystem layer claims a slot when a
// request arrives and frees it when it is answered; the layers below say
// where the request waits through SetStage on the request's context. A
// scanner (the .dcache/inflight file, the hung-request warning) reads the
// table without stopping anyone.
//
// Claiming and freeing a slot are a few atomic operations on a cache line
// no other request uses; no lock, no allocation.
package inflight

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Stage says where a request waits. The low byte is the kind; for
// StageLogReplica the replica index is above it.
type Stage uint32

// Stage kinds.
const (
	StageFUSE       Stage = iota // in the filesystem layer
	StageCache                   // in the engine, under or waiting for its lock
	StageLog                     // waiting for log space or a log sync
	StageLogReplica              // waiting for one replica's write or sync
	StageDestage                 // waiting for destage to make room (throttled)
	StageBackend                 // reading from the backend
)

// LogReplica is the stage of a request waiting on replica i.
func LogReplica(i int) Stage { return StageLogReplica | Stage(i)<<8 }

// Kind is the stage without its replica index.
func (s Stage) Kind() Stage { return s & 0xff }

// Replica is the replica index of a StageLogReplica stage.
func (s Stage) Replica() int { return int(s >> 8) }

func (s Stage) String() string {
	switch s.Kind() {
	case StageFUSE:
		return "fuse"
	case StageCache:
		return "cache"
	case StageLog:
		return "log"
	case StageLogReplica:
		return fmt.Sprintf("log replica %d", s.Replica())
	case StageDestage:
		return "destage"
	case StageBackend:
		return "backend"
	}
	return fmt.Sprintf("stage(%d)", uint32(s))
}

// stager is what a request's context holds.
type stager interface{ setStage(Stage) }

type ctxKey struct{}

// Key is the context key under which a request's slot is found; a context
// whose Value(Key) is a *Slot carries a tracked request.
var Key any = ctxKey{}

// SetStage records that the request carried by ctx now waits in s. It
// does nothing for a context that carries no request.
func SetStage(ctx context.Context, s Stage) {
	if ctx == nil {
		return
	}
	if sl, ok := ctx.(*Slot); ok { // the request's own context: no lookup
		sl.setStage(s)
		return
	}
	if st, ok := ctx.Value(Key).(stager); ok {
		st.setStage(s)
	}
}

// epoch is the origin of Now: a monotonic reading, so that Now reads one
// clock (time.Now reads two).
var epoch = time.Now()

// nowBase keeps readings of Now positive (0 marks a free slot) also
// for times somewhat before the process started.
const nowBase = int64(1) << 50

// Now is the time in nanoseconds on the table's clock (monotonic).
func Now() int64 { return int64(time.Since(epoch)) + nowBase }

// TimeOf converts a reading of Now to wall-clock time.
func TimeOf(ns int64) time.Time { return epoch.Add(time.Duration(ns - nowBase)) }

// Slot is one request in the table, one cache line. Its fields are
// atomics: the scanner reads them while the request moves on.
type Slot struct {
	// start is the request's start (a reading of Now); 0 is a free slot.
	// It also tells one request of the slot from
	// the next (the scanner's consistency check, the hung warning): two
	// requests that follow one another in a slot practically never read
	// the same nanosecond, and if they did the only harm is that the
	// second is not warned about again.
	start atomic.Int64
	// meta is the request's op (high 32 bits) and stage (low 32 bits).
	meta atomic.Uint64
	ino  atomic.Uint64
	off  atomic.Uint64
	// warned is the start of the last request of this slot reported hung.
	warned atomic.Int64
	// done is the request's cancel channel; only its owner touches it.
	done <-chan struct{}
	_    [16]byte
}

// Bind makes the slot the request's context: Done is the request's
// cancel channel (the kernel interrupted it), and SetStage on it, or on a
// context derived from it, updates the slot. The slot is its own context
// so that a request needs no allocation.
func (s *Slot) Bind(done <-chan struct{}) context.Context {
	s.done = done
	return s
}

func (s *Slot) Deadline() (time.Time, bool) { return time.Time{}, false }
func (s *Slot) Done() <-chan struct{}       { return s.done }
func (s *Slot) Err() error {
	select {
	case <-s.done:
		return context.Canceled
	default:
		return nil
	}
}
func (s *Slot) Value(key any) any {
	if key == Key {
		return s
	}
	return nil
}

// setStage is called only by the request that owns the slot, so the op
// half of meta cannot change under it.
func (s *Slot) setStage(st Stage) {
	if m := s.meta.Load(); Stage(uint32(m)) != st {
		s.meta.Store(m&^0xffffffff | uint64(st))
	}
}

// SetStage records the stage the slot's request waits in.
func (s *Slot) SetStage(st Stage) {
	if s != nil {
		s.setStage(st)
	}
}

// ShardSlots is the number of slots in a Shard.
const ShardSlots = 16

// Shard is the slots that one CPU's requests try first: 1 KiB, which a
// caller may place next to its other per-CPU data, so that a request
// touches one page for both (see Table.Init).
type Shard [ShardSlots]Slot

// Table is a fixed set of slots: shards, each used by the requests of one
// CPU (metrics.Affinity picks it), so that the slots one CPU uses stay in
// its cache; and a spill area for requests that find their shard full.
type Table struct {
	shards []*Shard
	spill  []Slot
	// overflow counts requests not tracked because every slot was taken.
	overflow atomic.Int64
}

// Init sets up a zero Table over the given shards, with a spill area for
// about n concurrent requests: twice n slots, so that a request that
// leaves its shard finds a free slot at once.
func (t *Table) Init(shards []*Shard, n int) {
	t.shards, t.spill = shards, make([]Slot, 2*n)
}

// Begin claims a slot in sh, one of the table's shards, for a request of
// kind op on object ino at offset off, started at now (a reading of Now).
// It returns nil when the table is full: the request is then served
// untracked.
//
// The shard's slots are tried in order, so that requests that follow one
// another on a CPU reuse its first slot, whose line stays in that CPU's
// cache; a request that finds its shard full tries the spill area from a
// random slot. A claim costs one compare-and-swap and at most three
// stores, no lock and no allocation.
func (t *Table) Begin(sh *Shard, op uint32, ino, off uint64, now int64) *Slot {
	for i := range sh {
		if s := claim(&sh[i], op, ino, off, now); s != nil {
			return s
		}
	}
	n := uint32(len(t.spill))
	i := rand.Uint32()
	for p := uint32(0); p < n; p++ {
		if s := claim(&t.spill[(i+p)%n], op, ino, off, now); s != nil {
			return s
		}
	}
	t.overflow.Add(1)
	return nil
}

// claim takes slot s if it is free. The start is published first, by the
// compare-and-swap that claims the slot; the other fields follow. A
// scanner may so see a just-claimed slot with its previous request's op
// and object, but only while the slot's start is a few instructions old,
// and the scanner looks only at requests older than its threshold. Fields
// that already hold the right value (runs of requests of one kind on one
// object) are not stored again: an atomic store is a locked instruction.
func claim(s *Slot, op uint32, ino, off uint64, now int64) *Slot {
	if s.start.Load() != 0 || !s.start.CompareAndSwap(0, now) {
		return nil
	}
	if m := uint64(op)<<32 | uint64(StageFUSE); s.meta.Load() != m {
		s.meta.Store(m)
	}
	if s.ino.Load() != ino {
		s.ino.Store(ino)
	}
	if s.off.Load() != off {
		s.off.Store(off)
	}
	return s
}

// End frees the slot (nil is allowed).
func (t *Table) End(s *Slot) {
	if s != nil {
		s.start.Store(0)
	}
}

// Overflow is how many requests went untracked.
func (t *Table) Overflow() int64 { return t.overflow.Load() }

// Request is one tracked request as the scanner sees it.
type Request struct {
	Op    uint32
	Ino   uint64
	Off   uint64
	Start time.Time
	Age   time.Duration
	Stage Stage
	// FirstReport is set by Older for a request not reported before.
	FirstReport bool
}

// Older returns the requests started more than threshold before now, in
// table order. With mark, each is marked as reported, and FirstReport is
// true only the first time a marking call returns it.
func (t *Table) Older(now time.Time, threshold time.Duration, mark bool) []Request {
	var out []Request
	limit := int64(now.Sub(epoch)-threshold) + nowBase
	for _, sh := range t.shards {
		out = older(out, sh[:], now, limit, mark)
	}
	return older(out, t.spill, now, limit, mark)
}

// older appends the requests of slots started before limit to out.
func older(out []Request, slots []Slot, now time.Time, limit int64, mark bool) []Request {
	for i := range slots {
		s := &slots[i]
		st := s.start.Load()
		if st <= 0 || st > limit {
			continue
		}
		m := s.meta.Load()
		r := Request{Op: uint32(m >> 32), Ino: s.ino.Load(), Off: s.off.Load(), Stage: Stage(uint32(m))}
		if s.start.Load() != st {
			continue // freed or reused meanwhile
		}
		r.Start = TimeOf(st)
		r.Age = now.Sub(r.Start)
		if w := s.warned.Load(); mark && w != st && s.warned.CompareAndSwap(w, st) {
			r.FirstReport = true
		}
		out = append(out, r)
	}
	return out
}
