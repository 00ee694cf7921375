package metrics

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Affinity spreads writers over a fixed set of shards so that most of the
// time each shard is written from one CPU only, and its cache lines stay
// in that CPU's cache instead of moving between CPUs on every request.
//
// Go offers no per-CPU storage, but sync.Pool keeps a private item per
// processor (P) and reaches it without atomics; an Affinity uses a pool as
// the memory of which shard the calling P uses. When the pool drops its
// items (it does at garbage collection), the next pick on that P takes
// the next shard round robin. Two goroutines may use one shard at once
// (a pick is a suggestion, not a lock), so shards must still be safe for
// concurrent use: they are atomics, just uncontended ones.
type Affinity struct {
	pool sync.Pool
	n    uint32
	next atomic.Uint32
}

// maxShards keeps shard numbers below 256, which Go boxes into an
// interface without allocating.
const maxShards = 256

// DefaultShards is the shard count for data written on every request:
// twice the processors, so that round robin after a pool drop rarely
// puts two processors on one shard.
func DefaultShards() int { return min(2*runtime.GOMAXPROCS(0), maxShards) }

// NewAffinity returns an affinity over n shards (1 to 256).
func NewAffinity(n int) *Affinity {
	if n < 1 || n > maxShards {
		panic("metrics: affinity shard count out of range")
	}
	return &Affinity{n: uint32(n)}
}

// Shards is the number of shards.
func (a *Affinity) Shards() int { return int(a.n) }

// Pick returns the shard the calling processor should write.
func (a *Affinity) Pick() int {
	i, ok := a.pool.Get().(int)
	if !ok {
		i = int(a.next.Add(1) % a.n)
	}
	a.pool.Put(i)
	return i
}
