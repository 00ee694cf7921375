// Package metrics holds the cheap counters that dcache's layers keep for
// .dcache/stats and the Prometheus endpoint: sharded counters, fixed-bucket
// latency histograms, and a ring of timed samples from which windowed
// figures (last 5 minutes, last hour) are computed by subtraction.
//
// Everything on the recording side is a handful of atomic adds with no
// locks and no allocation; the reading side (a snapshot) may be slower.
package metrics

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// shards is the number of cells of a Counter; a power of two.
const shards = 8

// cell is one cache line, so that shards do not share lines.
type cell struct {
	n atomic.Int64
	_ [56]byte
}

// Counter is a monotonic (or up-down) sum that many goroutines add to at
// once: each Add lands on one of several cache-line-sized cells, picked by
// the runtime's per-thread random source, so concurrent adders rarely touch
// the same line. Load sums the cells.
type Counter struct {
	c [shards]cell
}

// Add adds d.
func (c *Counter) Add(d int64) {
	c.c[rand.Uint32()&(shards-1)].n.Add(d)
}

// Load returns the sum.
func (c *Counter) Load() int64 {
	var s int64
	for i := range c.c {
		s += c.c[i].n.Load()
	}
	return s
}

// Buckets is the number of histogram buckets: bucket 0 counts durations
// below 2^10 ns (about 1 µs), bucket i >= 1 those in [2^(9+i), 2^(10+i))
// ns, and the last one everything from about 18 minutes up.
const Buckets = 32

// bucketShift puts the first bucket boundary at 2^10 ns (about 1 µs).
const bucketShift = 10

// bucketOf returns the bucket of a duration in nanoseconds.
func bucketOf(ns int64) int {
	if ns < 1<<bucketShift {
		return 0
	}
	b := bits.Len64(uint64(ns) >> bucketShift) // 1 for [2^10, 2^11)
	return min(b, Buckets-1)
}

// BucketUpper is the exclusive upper bound of bucket i in nanoseconds
// (+Inf for the last bucket).
func BucketUpper(i int) float64 {
	if i >= Buckets-1 {
		return math.Inf(1)
	}
	return float64(uint64(1) << (bucketShift + i))
}

// Histogram records durations in fixed power-of-two buckets, with their
// count, sum and maximum, and an amount that goes with each observation
// (the bytes a request moved). The sum, maximum, amount and the buckets
// of durations under 16 µs share the histogram's first cache line, so
// that recording a fast request touches one line; allocate histograms
// 64-byte aligned (in an array of structs padded to 64 bytes) to keep it so.
type Histogram struct {
	sum    atomic.Int64
	max    atomic.Int64
	amount atomic.Int64
	b      [Buckets]atomic.Int64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) { h.ObserveN(d, 0) }

// ObserveN records one duration and the amount that went with it.
func (h *Histogram) ObserveN(d time.Duration, n int64) {
	ns := int64(d)
	if ns < 0 {
		ns = 0
	}
	h.b[bucketOf(ns)].Add(1)
	h.sum.Add(ns)
	if n != 0 {
		h.amount.Add(n)
	}
	if ns > h.max.Load() {
		for {
			m := h.max.Load()
			if ns <= m || h.max.CompareAndSwap(m, ns) {
				return
			}
		}
	}
}

// Snapshot returns the histogram's current figures.
func (h *Histogram) Snapshot() HistSnapshot {
	var s HistSnapshot
	for i := range h.b {
		s.Buckets[i] = h.b[i].Load()
		s.Count += s.Buckets[i]
	}
	s.Sum = h.sum.Load()
	s.Max = h.max.Load()
	s.Amount = h.amount.Load()
	return s
}

// HistSnapshot is a histogram's figures at one moment. Two snapshots can
// be subtracted to get a window's histogram.
type HistSnapshot struct {
	Buckets [Buckets]int64
	Count   int64
	Sum     int64 // ns
	Max     int64 // ns; for a difference, the upper bound of the highest bucket used
	Amount  int64 // sum of the amounts given to ObserveN
}

// Merge adds o's figures to s (the shards of one histogram).
func (s *HistSnapshot) Merge(o HistSnapshot) {
	for i := range s.Buckets {
		s.Buckets[i] += o.Buckets[i]
	}
	s.Count += o.Count
	s.Sum += o.Sum
	s.Max = max(s.Max, o.Max)
	s.Amount += o.Amount
}

// Sub returns the histogram of what was observed between old and s.
func (s HistSnapshot) Sub(old HistSnapshot) HistSnapshot {
	var d HistSnapshot
	top := -1
	for i := range s.Buckets {
		d.Buckets[i] = s.Buckets[i] - old.Buckets[i]
		d.Count += d.Buckets[i]
		if d.Buckets[i] > 0 {
			top = i
		}
	}
	d.Sum = s.Sum - old.Sum
	d.Amount = s.Amount - old.Amount
	if top >= 0 {
		// The true maximum of the window is not known; the bucket's bound
		// is, capped by the all-time maximum.
		d.Max = int64(min(BucketUpper(top), float64(s.Max)))
	}
	return d
}

// Quantile estimates the q-quantile (0 < q <= 1) in nanoseconds by linear
// interpolation inside the bucket that holds it; 0 when empty.
func (s HistSnapshot) Quantile(q float64) int64 {
	if s.Count == 0 {
		return 0
	}
	rank := q * float64(s.Count)
	var seen float64
	for i, n := range s.Buckets {
		if n == 0 {
			continue
		}
		if seen+float64(n) >= rank {
			lo := 0.0
			if i > 0 {
				lo = BucketUpper(i - 1)
			}
			hi := BucketUpper(i)
			if math.IsInf(hi, 1) || hi > float64(s.Max) {
				hi = float64(s.Max)
			}
			if hi < lo {
				return int64(hi)
			}
			return int64(lo + (hi-lo)*(rank-seen)/float64(n))
		}
		seen += float64(n)
	}
	return s.Max
}

// Mean is the average in nanoseconds; 0 when empty.
func (s HistSnapshot) Mean() int64 {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / s.Count
}
