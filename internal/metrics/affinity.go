package metrics

import (
	"runtime"
	_ "unsafe" // for go:linkname
)

// Affinity spreads writers over a fixed set of shards so that most of the
// time each shard is written from one CPU only, and its cache lines stay
// in that CPU's cache instead of moving between CPUs on every request.
//
// Go offers no per-CPU storage, but a goroutine always runs on one of
// GOMAXPROCS processors (Ps), and only one goroutine runs on a P at a
// time: the shard is the caller's P number modulo the shard count. The
// goroutine may be moved to another P right after it picked (a pick is a
// suggestion, not a lock), so shards must still be safe for concurrent
// use: they are atomics, just uncontended ones.
type Affinity struct {
	n uint32
}

// procPin and procUnpin are the runtime's own way to read the current P,
// the one sync.Pool uses. The runtime keeps them callable from outside
// for this purpose (go.dev/issue/67401); a pin lasts two instructions.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// maxShards keeps shard numbers below 256, so that they fit the byte
// callers keep them in.
const maxShards = 256

// DefaultShards is the shard count for data written on every request:
// twice the processors, so that a later rise of GOMAXPROCS (the runtime
// follows the container's CPU limit) still finds Ps mostly apart.
func DefaultShards() int { return min(2*runtime.GOMAXPROCS(0), maxShards) }

// NewAffinity returns an affinity over n shards (1 to 256).
func NewAffinity(n int) *Affinity {
	if n < 1 || n > maxShards {
		panic("metrics: affinity shard count out of range")
	}
	return &Affinity{n: uint32(n)}
}

// Pick returns the shard the calling processor should write.
func (a *Affinity) Pick() int {
	p := procPin()
	procUnpin()
	return int(uint32(p) % a.n)
}
